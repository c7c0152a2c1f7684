/* test_classify.c - Exchange errors to stable console codes (exchange/classify). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "common/alloc.h"
#include "exchange/classify.h"

static struct eg_ps_error_record *rec(const char *type, const char *msg, const char *fqeid,
                                      int32_t cat)
{
    struct eg_ps_error_record *er = NULL;
    assert_int_equal(eg_ps_error_record_new(type, msg, fqeid, cat, &er), 0);
    return er;
}

static void check(const char *type, const char *msg, const char *fqeid, int32_t cat,
                  enum eg_classify_target target, const char *code, bool transient,
                  int64_t retry_after)
{
    struct eg_ps_error_record *er = rec(type, msg, fqeid, cat);
    struct eg_bridge_error out;
    eg_classify_record(er, target, &out);
    if (strcmp(out.code, code) != 0 || out.transient != transient ||
        out.retry_after_ms != retry_after)
        fail_msg("'%s': got %s/%d/%lld, want %s/%d/%lld", msg, out.code, out.transient,
                 (long long)out.retry_after_ms, code, transient, (long long)retry_after);
    assert_string_equal(out.exchange_type, type);
    assert_string_equal(out.exchange_message, msg);
    eg_ps_error_record_free(er);
}

static void test_records(void **state)
{
    const char *nf = "Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException";
    check(nf,
          "The operation couldn't be performed because object 'bob@x.example' couldn't be found "
          "on 'dc1.x.example'.",
          "[Server=EX1,RequestId=1,TimeStamp=t] "
          "[FailureCategory=Cmdlet-ManagementObjectNotFoundException] "
          "1A2B3C4D,Microsoft.Exchange.Management.RecipientTasks.GetCASMailbox",
          0, EG_TARGET_MAILBOX, "mailbox_not_found", false, 0);
    check(nf, "The mobile device cannot be found.", "x", 0, EG_TARGET_MAILBOX, "device_not_found",
          false, 0);
    check(nf, "The operation couldn't be performed because object 'x' couldn't be found.", "x", 0,
          EG_TARGET_DEVICE, "device_not_found", false, 0);
    check("System.InvalidOperationException",
          "The operation on mailbox \"ceo\" failed because it's out of the current user's write "
          "scope.",
          "x", 0, EG_TARGET_MAILBOX, "permission_denied", false, 0);
    check("System.Management.Automation.ParameterBindingException",
          "A parameter cannot be found that matches parameter name 'AccountOnly'.",
          "NamedParameterNotFound,Clear-MobileDevice", 5, EG_TARGET_DEVICE, "unsupported", false,
          0);
    check("System.Management.Automation.CommandNotFoundException",
          "The term 'Get-MobileDevice' is not recognized as the name of a cmdlet, function, script "
          "file, or operable program.",
          "CommandNotFoundException", 13, EG_TARGET_DEVICE, "unsupported", false, 0);
    check("System.Management.Automation.ParseException",
          "The syntax is not supported by this runspace. This can occur if the runspace is in "
          "no-language mode.",
          "ScriptsNotAllowed", 17, EG_TARGET_ORG, "internal", false, 0);
    check("System.Management.Automation.Remoting.PSRemotingTransportException",
          "The WS-Management service cannot process the request. The user load quota of 20 "
          "requests per 30 seconds has been exceeded. Send future requests at a slower rate or "
          "raise the quota for this user. The next request from this user will not be approved "
          "for at least 1500 milliseconds.",
          "x", 21, EG_TARGET_MAILBOX, "throttled", true, 1500);
    check("System.Management.Automation.Remoting.PSRemotingTransportException",
          "Connecting to remote server ex1 failed with the following error message : The "
          "WS-Management service cannot process the request. This user is allowed a maximum "
          "number of 18 concurrent shells, which has been exceeded.",
          "PSSessionOpenFailed", 1, EG_TARGET_MAILBOX, "throttled", true, 0);
    check("System.Management.Automation.Remoting.PSRemotingTransportException",
          "[FailureCategory=AuthZ-AuthorizationException] Fail to create runspace because you "
          "have exceeded your budget to create runspace. Please wait for 42 seconds.",
          "x", 1, EG_TARGET_ORG, "throttled", true, 42000);
    check("System.InvalidOperationException",
          "The value \"D1\" is already present in the collection.", "x", 7, EG_TARGET_MAILBOX,
          "throttled", true, 0);
    check("System.InvalidOperationException",
          "The device 'x' doesn't support account-only remote wipe. Account-only remote wipe "
          "requires Exchange ActiveSync version 16.1 or later.",
          "x", 7, EG_TARGET_DEVICE, "unsupported", false, 0);
    check("Some.New.Exception", "something odd", "x", 0, EG_TARGET_MAILBOX, "internal", true, 0);
}

static void test_delays(void **state)
{
    assert_int_equal(eg_classify_named_delay_ms("WARNING: Micro delay applied. Actual delayed: "
                                                "21956 msecs, Enforced: True"),
                     21956);
    assert_int_equal(eg_classify_named_delay_ms("nothing here"), -1);
    assert_int_equal(eg_classify_named_delay_ms(NULL), -1);
    assert_true(eg_classify_is_throttle_text("The maximum number of concurrent commands per shell "
                                             "has been exceeded."));
    assert_false(eg_classify_is_throttle_text("couldn't be found"));
}

static void test_pool_errors(void **state)
{
    struct eg_psrp_error e;
    struct eg_bridge_error out;
    memset(&e, 0, sizeof e);
    e.kind = EG_PSRP_ERR_AUTH;
    eg_classify_psrp(&e, EG_TARGET_MAILBOX, &out);
    assert_string_equal(out.code, "permission_denied");
    assert_false(out.transient);
    e.kind = EG_PSRP_ERR_TRANSPORT;
    e.code = EG_ETIMEDOUT;
    eg_classify_psrp(&e, EG_TARGET_MAILBOX, &out);
    assert_string_equal(out.code, "timeout");
    assert_true(out.transient);
    e.code = EG_EUNAVAIL;
    eg_classify_psrp(&e, EG_TARGET_MAILBOX, &out);
    assert_string_equal(out.code, "exchange_unreachable");
    e.kind = EG_PSRP_ERR_FAULT;
    e.fault_kind = EG_WSMAN_FAULT_INVALID_SELECTORS;
    eg_classify_psrp(&e, EG_TARGET_MAILBOX, &out);
    assert_string_equal(out.code, "exchange_unreachable");
    assert_true(out.transient);
    e.fault_kind = EG_WSMAN_FAULT_OTHER;
    e.wsman_code = 2150858811u;
    eg_classify_psrp(&e, EG_TARGET_MAILBOX, &out);
    assert_string_equal(out.code, "unsupported");
    assert_false(out.transient);
    e.fault_kind = EG_WSMAN_FAULT_THROTTLED;
    snprintf(e.message, sizeof e.message,
             "The next request from this user will not be approved "
             "for at least 250 milliseconds.");
    eg_classify_psrp(&e, EG_TARGET_MAILBOX, &out);
    assert_string_equal(out.code, "throttled");
    assert_int_equal(out.retry_after_ms, 250);
    /* A failed pipeline is classified by its record. */
    memset(&e, 0, sizeof e);
    e.kind = EG_PSRP_ERR_PIPELINE;
    e.record =
        rec("Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException",
            "The operation couldn't be performed because object 'x' couldn't be found.", "x", 0);
    eg_classify_psrp(&e, EG_TARGET_MAILBOX, &out);
    assert_string_equal(out.code, "mailbox_not_found");
    eg_psrp_error_clear(&e);
}

int main(void)
{
    eg_alloc_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_records),
        cmocka_unit_test(test_delays),
        cmocka_unit_test(test_pool_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
