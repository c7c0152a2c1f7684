/* cmdlets.c - the mock Exchange's cmdlet engine: the cmdlet table (names and parameters per
 * profile), PowerShell-style parameter binding, the error texts / exception types / FQEIDs of
 * exchange-semantics §12 in each profile's shape, the output objects (built on demand, one at a
 * time, in the shape Exchange sends over PSRP), every cmdlet, and mx_invoke.
 *
 * Locking: mx_invoke takes the org lock to resolve and bind, each cmdlet takes it to read or
 * change state and to build one output object, and drops it before every callback. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "common/alloc.h"
#include "common/limits.h"
#include "common/util.h"
#include "exchange/clixml_json.h"
#include "exchange/psrp_objects.h"
#include "mx_internal.h"

/* ================================================================ constants */

#define RESULT_SIZE_DEFAULT 1000
#define MAIL_INSERT_MAX     256

static const char TRUNCATION_WARNING[] =
    "There are more results available than are currently displayed. To view them, increase the "
    "value for the ResultSize parameter.";

static const char CONFIRM_WIPE[] = "This command will force all the data on the device to be "
                                   "permanently deleted. Do you want to continue?";

/* .NET types named in binding errors and by Get-Command. */
#define T_MBXID  "Microsoft.Exchange.Configuration.Tasks.MailboxIdParameter"
#define T_DEVID  "Microsoft.Exchange.Configuration.Tasks.MobileDeviceIdParameter"
#define T_ASID   "Microsoft.Exchange.Configuration.Tasks.ActiveSyncDeviceIdParameter"
#define T_POLID  "Microsoft.Exchange.Configuration.Tasks.MailboxPolicyIdParameter"
#define T_RULEID "Microsoft.Exchange.Configuration.Tasks.ActiveSyncDeviceAccessRuleIdParameter"
#define T_ORGID  "Microsoft.Exchange.Configuration.Tasks.ActiveSyncOrganizationSettingsIdParameter"
#define T_SRVID  "Microsoft.Exchange.Configuration.Tasks.ServerIdParameter"
#define T_OUID   "Microsoft.Exchange.Configuration.Tasks.OrganizationalUnitIdParameter"
#define T_FQDN   "Microsoft.Exchange.Data.Fqdn"
#define T_STR    "System.String"
#define T_STRS   "System.String[]"
#define T_BOOL   "System.Boolean"
#define T_SW     "System.Management.Automation.SwitchParameter"
#define T_MVP    "Microsoft.Exchange.Data.MultiValuedProperty`1[System.String]"
#define T_MVPSM  "Microsoft.Exchange.Data.MultiValuedProperty`1[Microsoft.Exchange.Data.SmtpAddress]"
#define T_RS     "Microsoft.Exchange.Data.Unlimited`1[System.UInt32]"
#define T_LEVEL  "Microsoft.Exchange.Data.Directory.SystemConfiguration.DeviceAccessLevel"
#define T_CHAR   "Microsoft.Exchange.Data.Directory.SystemConfiguration.DeviceAccessCharacteristic"
#define T_ACTION "System.Management.Automation.ActionPreference"
#define T_INT    "System.Int32"
#define T_OBJ    "System.Object"

#define X_NOTFOUND  "Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException"
#define X_AMBIG     "Microsoft.Exchange.Configuration.Tasks.ManagementObjectAmbiguousException"
#define X_SCOPE     "Microsoft.Exchange.Data.Directory.ADScopeException"
#define X_ADOP      "Microsoft.Exchange.Data.Directory.ADOperationException"
#define X_EXISTS    "Microsoft.Exchange.Data.Directory.ADObjectAlreadyExistsException"
#define X_INVOP     "System.InvalidOperationException"
#define X_BIND      "System.Management.Automation.ParameterBindingException"
#define X_TRANSFORM "System.Management.Automation.ParameterBindingArgumentTransformationException"
#define X_VALIDATE  "System.Management.Automation.ParameterBindingValidationException"
#define X_NOCMD     "System.Management.Automation.CommandNotFoundException"
#define X_HOST      "System.Management.Automation.Host.HostException"
#define X_PARSE     "System.Management.Automation.ParseException"

static const char *const TN_MVP_STR[] = {
    "Microsoft.Exchange.Data.MultiValuedProperty`1[[System.String, mscorlib, Version=4.0.0.0, "
    "Culture=neutral, PublicKeyToken=b77a5c561934e089]]",
    "Microsoft.Exchange.Data.MultiValuedPropertyBase", "System.Object"};
static const char *const TN_PROXY[] = {
    "Microsoft.Exchange.Data.ProxyAddressCollection",
    "Microsoft.Exchange.Data.ProxyAddressBaseCollection`1[[Microsoft.Exchange.Data.ProxyAddress, "
    "Microsoft.Exchange.Data, Version=15.0.0.0, Culture=neutral, "
    "PublicKeyToken=31bf3856ad364e35]]",
    "Microsoft.Exchange.Data.MultiValuedProperty`1[[Microsoft.Exchange.Data.ProxyAddress, "
    "Microsoft.Exchange.Data, Version=15.0.0.0, Culture=neutral, "
    "PublicKeyToken=31bf3856ad364e35]]",
    "Microsoft.Exchange.Data.MultiValuedPropertyBase", "System.Object"};
static const char *const TN_MVP_SMTP[] = {
    "Microsoft.Exchange.Data.MultiValuedProperty`1[[Microsoft.Exchange.Data.SmtpAddress, "
    "Microsoft.Exchange.Data, Version=15.0.0.0, Culture=neutral, "
    "PublicKeyToken=31bf3856ad364e35]]",
    "Microsoft.Exchange.Data.MultiValuedPropertyBase", "System.Object"};
static const char *const TN_CASMAILBOX[] = {
    "Microsoft.Exchange.Data.Directory.Management.CASMailbox",
    "Microsoft.Exchange.Data.Directory.Management.ADPresentationObject",
    "Microsoft.Exchange.Data.Directory.ADObject",
    "Microsoft.Exchange.Data.Directory.ADRawEntry",
    "Microsoft.Exchange.Data.ConfigurableObject",
    "System.Object"};
static const char *const TN_MOBILEDEVICE[] = {
    "Microsoft.Exchange.Data.Directory.Management.MobileDevice",
    "Microsoft.Exchange.Data.Directory.Management.ADPresentationObject",
    "Microsoft.Exchange.Data.Directory.ADObject",
    "Microsoft.Exchange.Data.Directory.ADRawEntry",
    "Microsoft.Exchange.Data.ConfigurableObject",
    "System.Object"};
static const char *const TN_ASDEVICE_2013[] = {
    "Microsoft.Exchange.Data.Directory.Management.ActiveSyncDevice",
    "Microsoft.Exchange.Data.Directory.Management.MobileDevice",
    "Microsoft.Exchange.Data.Directory.Management.ADPresentationObject",
    "Microsoft.Exchange.Data.Directory.ADObject",
    "Microsoft.Exchange.Data.Directory.ADRawEntry",
    "Microsoft.Exchange.Data.ConfigurableObject",
    "System.Object"};
static const char *const TN_ASDEVICE_2010[] = {
    "Microsoft.Exchange.Data.Directory.Management.ActiveSyncDevice",
    "Microsoft.Exchange.Data.Directory.Management.ADPresentationObject",
    "Microsoft.Exchange.Data.Directory.ADObject",
    "Microsoft.Exchange.Data.Directory.ADRawEntry",
    "Microsoft.Exchange.Data.ConfigurableObject",
    "System.Object"};
static const char *const TN_MD_STATS[] = {
    "Microsoft.Exchange.Data.Directory.Management.MobileDeviceConfiguration",
    "Microsoft.Exchange.Data.ConfigurableObject", "System.Object"};
static const char *const TN_AS_STATS[] = {
    "Microsoft.Exchange.Data.Directory.Management.ActiveSyncDeviceConfiguration",
    "Microsoft.Exchange.Data.ConfigurableObject", "System.Object"};
static const char *const TN_ORGSETTINGS[] = {
    "Microsoft.Exchange.Data.Directory.SystemConfiguration.ActiveSyncOrganizationSettings",
    "Microsoft.Exchange.Data.Directory.ADConfigurationObject",
    "Microsoft.Exchange.Data.Directory.ADObject",
    "Microsoft.Exchange.Data.Directory.ADRawEntry",
    "Microsoft.Exchange.Data.ConfigurableObject",
    "System.Object"};
static const char *const TN_RULE[] = {
    "Microsoft.Exchange.Data.Directory.SystemConfiguration.ActiveSyncDeviceAccessRule",
    "Microsoft.Exchange.Data.Directory.ADConfigurationObject",
    "Microsoft.Exchange.Data.Directory.ADObject",
    "Microsoft.Exchange.Data.Directory.ADRawEntry",
    "Microsoft.Exchange.Data.ConfigurableObject",
    "System.Object"};
static const char *const TN_SERVER[] = {
    "Microsoft.Exchange.Data.Directory.Management.ExchangeServer",
    "Microsoft.Exchange.Data.Directory.ADObject", "Microsoft.Exchange.Data.Directory.ADRawEntry",
    "Microsoft.Exchange.Data.ConfigurableObject", "System.Object"};
static const char *const TN_ORGCONFIG[] = {
    "Microsoft.Exchange.Data.Directory.Management.OrganizationConfig",
    "Microsoft.Exchange.Data.Directory.ADObject", "Microsoft.Exchange.Data.Directory.ADRawEntry",
    "Microsoft.Exchange.Data.ConfigurableObject", "System.Object"};
static const char *const TN_CMDLETINFO[] = {"System.Management.Automation.CmdletInfo",
                                            "System.Management.Automation.CommandInfo",
                                            "System.Object"};
static const char *const TN_PARAMMETA[] = {"System.Management.Automation.ParameterMetadata",
                                           "System.Object"};
static const char *const TN_DICT[] = {
    "System.Collections.Generic.Dictionary`2[[System.String, mscorlib, Version=4.0.0.0, "
    "Culture=neutral, PublicKeyToken=b77a5c561934e089],[System.Management.Automation."
    "ParameterMetadata, System.Management.Automation, Version=3.0.0.0, Culture=neutral, "
    "PublicKeyToken=31bf3856ad364e35]]",
    "System.Object"};

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

/* ================================================================ the table */

enum pk {
    PK_SWITCH,     /* SwitchParameter: no value, B, Nil (present), numbers */
    PK_BOOL,       /* System.Boolean: B or a number */
    PK_STRING,     /* System.String (Nil: $null) */
    PK_ID,         /* an Exchange *IdParameter: string forms only, objects refused */
    PK_MVP,        /* MultiValuedProperty: list (replace), @{Add=;Remove=}, $null (clear) */
    PK_RESULTSIZE, /* Unlimited<UInt32>: a number or "Unlimited" */
    PK_ENUM,       /* an enum given by name (or number) */
    PK_STRINGS,    /* string[] */
    PK_ACTION,     /* ActionPreference */
    PK_ANY         /* accepted and ignored */
};

struct pdef {
    const char *name;
    enum pk kind;
    unsigned profiles;
    int position; /* 0 = first positional argument, -1 = named only */
    bool mandatory;
    const char *type;
    const char *const *enums; /* PK_ENUM / PK_ACTION: NULL-terminated */
};

struct inv;
typedef int (*run_fn)(struct inv *iv);

#define CF_SP   1u /* ShouldProcess: -Confirm and -WhatIf */
#define CF_HIGH 2u /* ConfirmImpact High: prompts unless -Confirm:$false */
#define CF_LEGACY                                                                                  \
    4u /* *-ActiveSyncDevice*: deprecated in 2013+ (warning, EAS partnerships only)                \
        */

struct cdef {
    const char *name;
    unsigned profiles;
    const char *klass; /* the implementing class, for FQEIDs */
    unsigned flags;
    const struct pdef *params;
    size_t n_params;
    run_fn run;
    const char *successor; /* CF_LEGACY: the 2013+ name */
};

static const char *const LEVELS[] = {"Allow", "Block", "Quarantine", NULL};
static const char *const CHARACS[] = {"DeviceType", "DeviceModel", "DeviceOS",
                                      "UserAgent",  "XMSWLHeader", NULL};
enum { ACT_SILENT = 0, ACT_STOP = 1, ACT_CONTINUE = 2, ACT_INQUIRE = 3, ACT_IGNORE = 4 };
static const char *const ACTIONS[] = {"SilentlyContinue", "Stop",    "Continue", "Inquire",
                                      "Ignore",           "Suspend", NULL};

#define DC_PARAM                                                                                   \
    {                                                                                              \
        "DomainController", PK_STRING, PF_ONPREM, -1, false, T_FQDN, NULL                          \
    }

static const struct pdef P_GET_CAS[] = {
    {"Identity", PK_ID, PF_ALL, 0, false, T_MBXID, NULL},
    {"Anr", PK_STRING, PF_ALL, -1, false, T_STR, NULL},
    {"Filter", PK_STRING, PF_ALL, -1, false, T_STR, NULL},
    {"ResultSize", PK_RESULTSIZE, PF_ALL, -1, false, T_RS, NULL},
    {"SortBy", PK_STRING, PF_ALL, -1, false, T_STR, NULL},
    {"ActiveSyncDebugLogging", PK_SWITCH, PF_ALL, -1, false, T_SW, NULL},
    {"RecalculateHasActiveSyncDevicePartnership", PK_SWITCH, PF_2013UP, -1, false, T_SW, NULL},
    {"ProtocolSettings", PK_SWITCH, PF_ALL, -1, false, T_SW, NULL},
    {"OrganizationalUnit", PK_STRING, PF_ALL, -1, false, T_OUID, NULL},
    {"IgnoreDefaultScope", PK_SWITCH, PF_ONPREM, -1, false, T_SW, NULL},
    {"ReadFromDomainController", PK_SWITCH, PF_ONPREM, -1, false, T_SW, NULL},
    DC_PARAM,
};

static const struct pdef P_SET_CAS[] = {
    {"Identity", PK_ID, PF_ALL, 0, true, T_MBXID, NULL},
    {"ActiveSyncAllowedDeviceIDs", PK_MVP, PF_ALL, -1, false, T_MVP, NULL},
    {"ActiveSyncBlockedDeviceIDs", PK_MVP, PF_ALL, -1, false, T_MVP, NULL},
    {"ActiveSyncEnabled", PK_BOOL, PF_ALL, -1, false, T_BOOL, NULL},
    {"ActiveSyncMailboxPolicy", PK_ID, PF_ALL, -1, false, T_POLID, NULL},
    {"ActiveSyncDebugLogging", PK_BOOL, PF_ALL, -1, false, T_BOOL, NULL},
    {"ActiveSyncSuppressReadReceipt", PK_BOOL, PF_2016UP, -1, false, T_BOOL, NULL},
    {"HasActiveSyncDevicePartnership", PK_BOOL, PF_2010, -1, false, T_BOOL, NULL},
    {"ResetAutoBlockedDevices", PK_SWITCH, PF_13_16, -1, false, T_SW, NULL},
    {"IgnoreDefaultScope", PK_SWITCH, PF_ONPREM, -1, false, T_SW, NULL},
    DC_PARAM,
};

static const struct pdef P_GET_MD[] = {
    {"Identity", PK_ID, PF_ALL, 0, false, T_DEVID, NULL},
    {"Mailbox", PK_ID, PF_ALL, -1, false, T_MBXID, NULL},
    {"ActiveSync", PK_SWITCH, PF_2013UP, -1, false, T_SW, NULL},
    {"OWAforDevices", PK_SWITCH, PF_2013UP, -1, false, T_SW, NULL},
    {"RestApi", PK_SWITCH, PF_2016UP, -1, false, T_SW, NULL},
    {"UniversalOutlook", PK_SWITCH, PF_2016UP, -1, false, T_SW, NULL},
    {"Filter", PK_STRING, PF_ALL, -1, false, T_STR, NULL},
    {"ResultSize", PK_RESULTSIZE, PF_ALL, -1, false, T_RS, NULL},
    {"SortBy", PK_STRING, PF_ALL, -1, false, T_STR, NULL},
    {"OrganizationalUnit", PK_STRING, PF_ALL, -1, false, T_OUID, NULL},
    {"Monitoring", PK_SWITCH, PF_ONPREM, -1, false, T_SW, NULL},
    DC_PARAM,
};

static const struct pdef P_GET_ASD[] = {
    {"Identity", PK_ID, PF_ALL, 0, false, T_ASID, NULL},
    {"Mailbox", PK_ID, PF_ALL, -1, false, T_MBXID, NULL},
    {"Filter", PK_STRING, PF_ALL, -1, false, T_STR, NULL},
    {"ResultSize", PK_RESULTSIZE, PF_ALL, -1, false, T_RS, NULL},
    {"SortBy", PK_STRING, PF_ALL, -1, false, T_STR, NULL},
    {"OrganizationalUnit", PK_STRING, PF_ALL, -1, false, T_OUID, NULL},
    {"Monitoring", PK_SWITCH, PF_ONPREM, -1, false, T_SW, NULL},
    DC_PARAM,
};

static const struct pdef P_GET_MDS[] = {
    {"Identity", PK_ID, PF_ALL, 0, false, T_DEVID, NULL},
    {"Mailbox", PK_ID, PF_ALL, -1, false, T_MBXID, NULL},
    {"ActiveSync", PK_SWITCH, PF_2013UP, -1, false, T_SW, NULL},
    {"OWAforDevices", PK_SWITCH, PF_2013UP, -1, false, T_SW, NULL},
    {"RestApi", PK_SWITCH, PF_2016UP, -1, false, T_SW, NULL},
    {"UniversalOutlook", PK_SWITCH, PF_2016UP, -1, false, T_SW, NULL},
    {"GetMailboxLog", PK_SWITCH, PF_ALL, -1, false, T_SW, NULL},
    {"NotificationEmailAddresses", PK_MVP, PF_ALL, -1, false, T_MVP, NULL},
    {"ShowRecoveryPassword", PK_SWITCH, PF_ALL, -1, false, T_SW, NULL},
    {"UseCustomRouting", PK_SWITCH, PF_ONLINE, -1, false, T_SW, NULL},
    DC_PARAM,
};

static const struct pdef P_GET_ASDS[] = {
    {"Identity", PK_ID, PF_ALL, 0, false, T_ASID, NULL},
    {"Mailbox", PK_ID, PF_ALL, -1, false, T_MBXID, NULL},
    {"GetMailboxLog", PK_SWITCH, PF_ALL, -1, false, T_SW, NULL},
    {"NotificationEmailAddresses", PK_MVP, PF_ALL, -1, false, T_MVP, NULL},
    {"ShowRecoveryPassword", PK_SWITCH, PF_ALL, -1, false, T_SW, NULL},
    DC_PARAM,
};

static const struct pdef P_CLEAR_MD[] = {
    {"Identity", PK_ID, PF_ALL, 0, true, T_DEVID, NULL},
    {"AccountOnly", PK_SWITCH, PF_2016UP, -1, false, T_SW, NULL},
    {"Cancel", PK_SWITCH, PF_ALL, -1, false, T_SW, NULL},
    {"NotificationEmailAddresses", PK_MVP, PF_ALL, -1, false, T_MVP, NULL},
    DC_PARAM,
};

static const struct pdef P_CLEAR_ASD[] = {
    {"Identity", PK_ID, PF_ALL, 0, true, T_ASID, NULL},
    {"Cancel", PK_SWITCH, PF_ALL, -1, false, T_SW, NULL},
    {"NotificationEmailAddresses", PK_MVP, PF_ALL, -1, false, T_MVP, NULL},
    DC_PARAM,
};

static const struct pdef P_REMOVE_MD[] = {
    {"Identity", PK_ID, PF_ALL, 0, true, T_DEVID, NULL},
    DC_PARAM,
};

static const struct pdef P_REMOVE_ASD[] = {
    {"Identity", PK_ID, PF_ALL, 0, true, T_ASID, NULL},
    DC_PARAM,
};

static const struct pdef P_GET_ORGS[] = {
    {"Identity", PK_ID, PF_ALL, 0, false, T_ORGID, NULL},
    DC_PARAM,
};

static const struct pdef P_SET_ORGS[] = {
    {"Identity", PK_ID, PF_ALL, 0, false, T_ORGID, NULL},
    {"DefaultAccessLevel", PK_ENUM, PF_ALL, -1, false, T_LEVEL, LEVELS},
    {"AdminMailRecipients", PK_MVP, PF_ALL, -1, false, T_MVPSM, NULL},
    {"UserMailInsert", PK_STRING, PF_ALL, -1, false, T_STR, NULL},
    {"OtaNotificationMailInsert", PK_STRING, PF_ALL, -1, false, T_STR, NULL},
    {"AllowAccessForUnSupportedPlatform", PK_BOOL, PF_ALL, -1, false, T_BOOL, NULL},
    {"AllowRMSSupportForUnenlightenedApps", PK_BOOL, PF_ALL, -1, false, T_BOOL, NULL},
    {"EnableMobileMailboxPolicyWhenCAInplace", PK_BOOL, PF_ONLINE, -1, false, T_BOOL, NULL},
    {"TenantAdminPreference", PK_STRING, PF_ONLINE, -1, false, T_STR, NULL},
    DC_PARAM,
};

static const struct pdef P_GET_RULE[] = {
    {"Identity", PK_ID, PF_ALL, 0, false, T_RULEID, NULL},
    DC_PARAM,
};

static const struct pdef P_NEW_RULE[] = {
    {"QueryString", PK_STRING, PF_ALL, -1, true, T_STR, NULL},
    {"Characteristic", PK_ENUM, PF_ALL, -1, true, T_CHAR, CHARACS},
    {"AccessLevel", PK_ENUM, PF_ALL, -1, true, T_LEVEL, LEVELS},
    DC_PARAM,
};

static const struct pdef P_SET_RULE[] = {
    {"Identity", PK_ID, PF_ALL, 0, true, T_RULEID, NULL},
    {"AccessLevel", PK_ENUM, PF_ALL, -1, false, T_LEVEL, LEVELS},
    DC_PARAM,
};

static const struct pdef P_REMOVE_RULE[] = {
    {"Identity", PK_ID, PF_ALL, 0, true, T_RULEID, NULL},
    DC_PARAM,
};

static const struct pdef P_GET_SERVER[] = {
    {"Identity", PK_ID, PF_ALL, 0, false, T_SRVID, NULL},
    {"Domain", PK_STRING, PF_ALL, -1, false, T_FQDN, NULL},
    {"Status", PK_SWITCH, PF_ALL, -1, false, T_SW, NULL},
    DC_PARAM,
};

static const struct pdef P_GET_ORGCONFIG[] = {
    DC_PARAM,
};

static const struct pdef P_GET_COMMAND[] = {
    {"Name", PK_STRINGS, PF_ALL, 0, false, T_STRS, NULL},
    {"Module", PK_STRINGS, PF_ALL, -1, false, T_STRS, NULL},
    {"CommandType", PK_ANY, PF_ALL, -1, false, "System.Management.Automation.CommandTypes", NULL},
    {"ListImported", PK_SWITCH, PF_ALL, -1, false, T_SW, NULL},
};

static const struct pdef P_GET_EXOCAS[] = {
    {"Identity", PK_STRING, PF_ALL, 0, false, T_STR, NULL},
    {"ExternalDirectoryObjectId", PK_STRING, PF_ALL, -1, false, "System.Guid", NULL},
    {"PrimarySmtpAddress", PK_STRING, PF_ALL, -1, false, T_STR, NULL},
    {"UserPrincipalName", PK_STRING, PF_ALL, -1, false, T_STR, NULL},
    {"Anr", PK_STRING, PF_ALL, -1, false, T_STR, NULL},
    {"Filter", PK_STRING, PF_ALL, -1, false, T_STR, NULL},
    {"ResultSize", PK_RESULTSIZE, PF_ALL, -1, false, T_RS, NULL},
    {"Properties", PK_STRINGS, PF_ALL, -1, false, T_STRS, NULL},
    {"PropertySets", PK_STRINGS, PF_ALL, -1, false, T_STRS, NULL},
};

static const struct pdef P_GET_EXOMDS[] = {
    {"Identity", PK_STRING, PF_ALL, 0, false, T_STR, NULL},
    {"Mailbox", PK_STRING, PF_ALL, -1, false, T_STR, NULL},
    {"ExternalDirectoryObjectId", PK_STRING, PF_ALL, -1, false, "System.Guid", NULL},
    {"PrimarySmtpAddress", PK_STRING, PF_ALL, -1, false, T_STR, NULL},
    {"UserPrincipalName", PK_STRING, PF_ALL, -1, false, T_STR, NULL},
    {"ActiveSync", PK_SWITCH, PF_ALL, -1, false, T_SW, NULL},
    {"OWAforDevices", PK_SWITCH, PF_ALL, -1, false, T_SW, NULL},
    {"RestApi", PK_SWITCH, PF_ALL, -1, false, T_SW, NULL},
    {"UniversalOutlook", PK_SWITCH, PF_ALL, -1, false, T_SW, NULL},
};

static const struct pdef PD_CONFIRM = {"Confirm", PK_SWITCH, PF_ALL, -1, false, T_SW, NULL};
static const struct pdef PD_WHATIF = {"WhatIf", PK_SWITCH, PF_ALL, -1, false, T_SW, NULL};

static const struct pdef P_COMMON[] = {
    {"Verbose", PK_SWITCH, PF_ALL, -1, false, T_SW, NULL},
    {"Debug", PK_SWITCH, PF_ALL, -1, false, T_SW, NULL},
    {"ErrorAction", PK_ACTION, PF_ALL, -1, false, T_ACTION, ACTIONS},
    {"WarningAction", PK_ACTION, PF_ALL, -1, false, T_ACTION, ACTIONS},
    {"InformationAction", PK_ACTION, PF_ALL, -1, false, T_ACTION, ACTIONS},
    {"ErrorVariable", PK_ANY, PF_ALL, -1, false, T_STR, NULL},
    {"WarningVariable", PK_ANY, PF_ALL, -1, false, T_STR, NULL},
    {"InformationVariable", PK_ANY, PF_ALL, -1, false, T_STR, NULL},
    {"OutVariable", PK_ANY, PF_ALL, -1, false, T_STR, NULL},
    {"OutBuffer", PK_ANY, PF_ALL, -1, false, T_INT, NULL},
    {"PipelineVariable", PK_ANY, PF_ALL, -1, false, T_STR, NULL},
};

static const struct {
    const char *alias, *name;
} ALIASES[] = {{"vb", "Verbose"},
               {"db", "Debug"},
               {"ea", "ErrorAction"},
               {"wa", "WarningAction"},
               {"infa", "InformationAction"},
               {"ev", "ErrorVariable"},
               {"wv", "WarningVariable"},
               {"iv", "InformationVariable"},
               {"ov", "OutVariable"},
               {"ob", "OutBuffer"},
               {"pv", "PipelineVariable"},
               {"cf", "Confirm"},
               {"wi", "WhatIf"},
               {"dc", "DomainController"}};

static int run_get_cas(struct inv *iv);
static int run_set_cas(struct inv *iv);
static int run_get_device(struct inv *iv);
static int run_get_stats(struct inv *iv);
static int run_clear_device(struct inv *iv);
static int run_remove_device(struct inv *iv);
static int run_get_orgs(struct inv *iv);
static int run_set_orgs(struct inv *iv);
static int run_get_rule(struct inv *iv);
static int run_new_rule(struct inv *iv);
static int run_set_rule(struct inv *iv);
static int run_remove_rule(struct inv *iv);
static int run_get_server(struct inv *iv);
static int run_get_orgconfig(struct inv *iv);
static int run_get_command(struct inv *iv);
static int run_get_exocas(struct inv *iv);
static int run_get_exostats(struct inv *iv);

#define NS_RT "Microsoft.Exchange.Management.RecipientTasks."
#define NS_T  "Microsoft.Exchange.Management.Tasks."
#define NS_SC "Microsoft.Exchange.Management.SystemConfigurationTasks."
#define NS_V3 "Microsoft.Exchange.Management.RestApiClient."
#define CMD(n, pf, cls, fl, p, fn, succ)                                                           \
    {                                                                                              \
        n, pf, cls, fl, p, NELEM(p), fn, succ                                                      \
    }

static const struct cdef CMDLETS[] = {
    CMD("Get-CASMailbox", PF_ALL, NS_RT "GetCASMailbox", 0, P_GET_CAS, run_get_cas, NULL),
    CMD("Set-CASMailbox", PF_ALL, NS_RT "SetCASMailbox", CF_SP, P_SET_CAS, run_set_cas, NULL),
    CMD("Get-MobileDevice", PF_2013UP, NS_T "GetMobileDevice", 0, P_GET_MD, run_get_device, NULL),
    CMD("Get-ActiveSyncDevice", PF_ALL, NS_T "GetActiveSyncDevice", CF_LEGACY, P_GET_ASD,
        run_get_device, "Get-MobileDevice"),
    CMD("Get-MobileDeviceStatistics", PF_2013UP, NS_T "GetMobileDeviceStatistics", 0, P_GET_MDS,
        run_get_stats, NULL),
    CMD("Get-ActiveSyncDeviceStatistics", PF_ALL, NS_T "GetActiveSyncDeviceStatistics", CF_LEGACY,
        P_GET_ASDS, run_get_stats, "Get-MobileDeviceStatistics"),
    CMD("Clear-MobileDevice", PF_2013UP, NS_T "ClearMobileDevice", CF_SP | CF_HIGH, P_CLEAR_MD,
        run_clear_device, NULL),
    CMD("Clear-ActiveSyncDevice", PF_ALL, NS_T "ClearActiveSyncDevice", CF_SP | CF_HIGH | CF_LEGACY,
        P_CLEAR_ASD, run_clear_device, "Clear-MobileDevice"),
    CMD("Remove-MobileDevice", PF_2013UP, NS_T "RemoveMobileDevice", CF_SP | CF_HIGH, P_REMOVE_MD,
        run_remove_device, NULL),
    CMD("Remove-ActiveSyncDevice", PF_ALL, NS_T "RemoveActiveSyncDevice",
        CF_SP | CF_HIGH | CF_LEGACY, P_REMOVE_ASD, run_remove_device, "Remove-MobileDevice"),
    CMD("Get-ActiveSyncOrganizationSettings", PF_ALL, NS_T "GetActiveSyncOrganizationSettings", 0,
        P_GET_ORGS, run_get_orgs, NULL),
    CMD("Set-ActiveSyncOrganizationSettings", PF_ALL, NS_T "SetActiveSyncOrganizationSettings",
        CF_SP, P_SET_ORGS, run_set_orgs, NULL),
    CMD("Get-ActiveSyncDeviceAccessRule", PF_ALL, NS_T "GetActiveSyncDeviceAccessRule", 0,
        P_GET_RULE, run_get_rule, NULL),
    CMD("New-ActiveSyncDeviceAccessRule", PF_ALL, NS_T "NewActiveSyncDeviceAccessRule", CF_SP,
        P_NEW_RULE, run_new_rule, NULL),
    CMD("Set-ActiveSyncDeviceAccessRule", PF_ALL, NS_T "SetActiveSyncDeviceAccessRule", CF_SP,
        P_SET_RULE, run_set_rule, NULL),
    CMD("Remove-ActiveSyncDeviceAccessRule", PF_ALL, NS_T "RemoveActiveSyncDeviceAccessRule",
        CF_SP | CF_HIGH, P_REMOVE_RULE, run_remove_rule, NULL),
    CMD("Get-ExchangeServer", PF_ONPREM, NS_SC "GetExchangeServer", 0, P_GET_SERVER, run_get_server,
        NULL),
    CMD("Get-OrganizationConfig", PF_ALL, NS_SC "GetOrganizationConfig", 0, P_GET_ORGCONFIG,
        run_get_orgconfig, NULL),
    CMD("Get-Command", PF_ALL, "Microsoft.PowerShell.Commands.GetCommandCommand", 0, P_GET_COMMAND,
        run_get_command, NULL),
    CMD("Get-EXOCasMailbox", PF_ONLINE, NS_V3 "GetExoCasMailbox", 0, P_GET_EXOCAS, run_get_exocas,
        NULL),
    CMD("Get-EXOMobileDeviceStatistics", PF_ONLINE, NS_V3 "GetExoMobileDeviceStatistics", 0,
        P_GET_EXOMDS, run_get_exostats, NULL),
};

static const struct cdef *cmdlet_by_name(const char *name)
{
    for (size_t i = 0; i < NELEM(CMDLETS); i++)
        if (strcasecmp(CMDLETS[i].name, name) == 0)
            return &CMDLETS[i];
    return NULL;
}

bool mx_common_parameter(const char *name)
{
    for (size_t i = 0; i < NELEM(P_COMMON); i++)
        if (strcasecmp(P_COMMON[i].name, name) == 0)
            return true;
    return false;
}

static void canon_copy(char *dst, const char *src)
{
    if (dst)
        snprintf(dst, 128, "%s", src);
}

int mx_cmdlet_lookup(const char *cmdlet, const char *parameter, char *canon_cmdlet,
                     char *canon_param)
{
    if (!cmdlet)
        return EG_EINVAL;
    const struct cdef *c = cmdlet_by_name(cmdlet);
    if (!c)
        return EG_ENOTFOUND;
    const char *pn = NULL;
    if (parameter) {
        for (size_t i = 0; i < c->n_params && !pn; i++)
            if (strcasecmp(c->params[i].name, parameter) == 0)
                pn = c->params[i].name;
        if (!pn && (c->flags & CF_SP) && strcasecmp(parameter, "Confirm") == 0)
            pn = "Confirm";
        if (!pn && (c->flags & CF_SP) && strcasecmp(parameter, "WhatIf") == 0)
            pn = "WhatIf";
        if (!pn)
            return EG_ENOTFOUND;
    }
    canon_copy(canon_cmdlet, c->name);
    if (pn)
        canon_copy(canon_param, pn);
    return 0;
}

/* ================================================================ invocation state */

/* A MultiValuedProperty write. */
struct mvp {
    bool clear;   /* $null */
    bool replace; /* a value or list: the new content */
    bool edit;    /* @{Add=..; Remove=..} */
    char **repl, **add, **rem;
    size_t n_repl, n_add, n_rem;
};

/* One bound parameter. */
struct bval {
    bool set;
    bool null; /* bound to $null */
    const char *given;
    const struct eg_ps_value *v; /* as received (NULL: a switch without value) */
    bool b;
    const char *s; /* PK_STRING / PK_ID (NULL when null) */
    char buf[64];  /* backing store of s for numbers and GUIDs */
    int64_t n;     /* PK_RESULTSIZE (-1 = Unlimited), PK_ENUM / PK_ACTION (index) */
    struct mvp mvp;
    char **strs; /* PK_STRINGS */
    size_t n_strs;
};

struct inv {
    struct mx_org *org;
    enum mx_profile profile;
    const struct cdef *cmd;
    const struct mx_output_ops *out;
    void *ctx;
    struct mx_error *term;
    /* visible parameters (profile, RBAC) and their bindings */
    const struct pdef *vis[64];
    struct bval bv[64];
    size_t n_vis;
    int erraction, warnaction; /* -1: not given */
    bool confirm_set, confirm, whatif;
    bool task_terminating;
    int cb_rc;      /* the code a callback returned (0: none) */
    json_t *errors; /* non-terminating errors, for the recorder */
    size_t n_objects;
};

static const struct bval UNSET;

/* The binding of the visible parameter name (an unset value when hidden or not given). */
static const struct bval *arg(const struct inv *iv, const char *name)
{
    for (size_t i = 0; i < iv->n_vis; i++)
        if (strcasecmp(iv->vis[i]->name, name) == 0)
            return &iv->bv[i];
    return &UNSET;
}

static void mvp_free(struct mvp *m)
{
    eg_ps_string_array_free(m->repl, m->n_repl);
    eg_ps_string_array_free(m->add, m->n_add);
    eg_ps_string_array_free(m->rem, m->n_rem);
    memset(m, 0, sizeof *m);
}

static void inv_release(struct inv *iv)
{
    for (size_t i = 0; i < iv->n_vis; i++) {
        mvp_free(&iv->bv[i].mvp);
        eg_ps_string_array_free(iv->bv[i].strs, iv->bv[i].n_strs);
        iv->bv[i].strs = NULL;
    }
    json_decref(iv->errors);
    iv->errors = NULL;
}

static bool pf_has(const struct inv *iv, unsigned mask)
{
    return (mask & mx_pf(iv->profile)) != 0;
}

/* ================================================================ errors */

static const char *short_type(const char *type)
{
    const char *d = strrchr(type, '.');
    return d ? d + 1 : type;
}

static uint32_t token_hash(const char *a, const char *b)
{
    uint32_t h = 2166136261u;
    for (const char *p = a; *p; p++)
        h = (h ^ (unsigned char)*p) * 16777619u;
    h = (h ^ '|') * 16777619u;
    for (const char *p = b; p && *p; p++)
        h = (h ^ (unsigned char)*p) * 16777619u;
    return h;
}

static const char *dc_fqdn(enum mx_profile p)
{
    return p == MX_PROFILE_ONLINE ? "EURPR01A001DC01.EURPR01A001.prod.outlook.com"
                                  : "dc01.contoso.example";
}

static const char *server_name(enum mx_profile p)
{
    return p == MX_PROFILE_ONLINE ? "AM6PR01MB1234" : "EXCH01";
}

/* "Category: (Target:Type) [Activity], Reason", the target shortened as Windows PowerShell does. */
static void category_line(struct mx_error *e)
{
    const char *cat = eg_ps_error_category_name(e->category);
    char tgt[sizeof e->target];
    size_t tl = strlen(e->target);
    if (tl > 40)
        snprintf(tgt, sizeof tgt, "%.15s...%.15s", e->target, e->target + tl - 15);
    else
        snprintf(tgt, sizeof tgt, "%s", e->target);
    snprintf(e->category_message, sizeof e->category_message, "%s: (%.200s:%.40s) [%.100s], %.100s",
             cat ? cat : "NotSpecified", tgt, e->target_type, e->activity, e->category_reason);
}

static void err_base(struct mx_error *e, const char *type, int category, const char *activity,
                     const char *fmt, va_list ap)
{
    memset(e, 0, sizeof *e);
    snprintf(e->exception_type, sizeof e->exception_type, "%s", type);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    e->category = category;
    snprintf(e->category_reason, sizeof e->category_reason, "%s", short_type(type));
    snprintf(e->activity, sizeof e->activity, "%s", activity ? activity : "");
    snprintf(e->rest_code, sizeof e->rest_code, "BadRequest");
    e->http_status = 400;
}

/* A PowerShell engine error (parameter binding, host): FQEID "<error id>,<implementing class>". */
static int err_ps(struct inv *iv, const char *type, const char *error_id, int category,
                  const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static int err_ps(struct inv *iv, const char *type, const char *error_id, int category,
                  const char *fmt, ...)
{
    struct mx_error *e = iv->term;
    va_list ap;
    va_start(ap, fmt);
    err_base(e, type, category, iv->cmd ? iv->cmd->name : "", fmt, ap);
    va_end(ap);
    if (iv->cmd)
        snprintf(e->fqeid, sizeof e->fqeid, "%s,%s", error_id, iv->cmd->klass);
    else
        snprintf(e->fqeid, sizeof e->fqeid, "%s", error_id);
    category_line(e);
    return EG_EREMOTE;
}

/* The M/d/yyyy h:mm:ss AM time of Exchange's FQEID prefix. */
static void us_time(int64_t ms, char *buf, size_t size)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    int h = tm.tm_hour % 12;
    snprintf(buf, size, "%d/%d/%d %d:%02d:%02d %s", tm.tm_mon + 1, tm.tm_mday, tm.tm_year + 1900,
             h ? h : 12, tm.tm_min, tm.tm_sec, tm.tm_hour < 12 ? "AM" : "PM");
}

/* An Exchange task error into e: FQEID in the profile's shape (§12), details for Online, REST
 * code and status. rest_code NULL = BadRequest/400. */
static void err_task(struct inv *iv, struct mx_error *e, const char *type, int category,
                     const char *rest_code, int http_status, const char *fmt, ...)
    __attribute__((format(printf, 7, 8)));
static void err_task(struct inv *iv, struct mx_error *e, const char *type, int category,
                     const char *rest_code, int http_status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    err_base(e, type, category, iv->cmd->name, fmt, ap);
    va_end(ap);
    uint32_t tok = token_hash(type, iv->cmd->klass);
    if (iv->profile == MX_PROFILE_2010) {
        snprintf(e->fqeid, sizeof e->fqeid, "%08X,%s", tok, iv->cmd->klass);
    } else {
        uint64_t seq = __atomic_add_fetch(&iv->org->err_seq, 1, __ATOMIC_RELAXED);
        uint64_t st = seq * UINT64_C(0x9E3779B97F4A7C15) ^ UINT64_C(0x7265717565737469);
        uint8_t g[16];
        char gt[40], ts[48];
        mx_rand_guid(&st, g);
        mx_guid_text(g, gt);
        int64_t now = __atomic_load_n(&iv->org->clock_ms, __ATOMIC_RELAXED);
        us_time(now > 0 ? now : eg_now_ms(), ts, sizeof ts);
        snprintf(e->fqeid, sizeof e->fqeid,
                 "[Server=%s,RequestId=%s,TimeStamp=%s] [FailureCategory=Cmdlet-%s] %08X,%s",
                 server_name(iv->profile), gt, ts, short_type(type), tok, iv->cmd->klass);
    }
    if (iv->profile == MX_PROFILE_ONLINE) {
        unsigned code = strcmp(type, X_NOTFOUND) == 0 ? 0x6F9304u : (unsigned)(tok & 0xFFFFFF);
        if (strcmp(e->message, "The mobile device cannot be found.") == 0)
            code = 0x0FBD0Cu;
        snprintf(e->details_message, sizeof e->details_message, "Ex%06X|%s|%s", code, type,
                 e->message);
    }
    if (rest_code) {
        snprintf(e->rest_code, sizeof e->rest_code, "%s", rest_code);
        e->http_status = http_status;
    }
    category_line(e);
}

static void err_not_found(struct inv *iv, struct mx_error *e, const char *id)
{
    err_task(iv, e, X_NOTFOUND, EG_PS_ERR_NOT_SPECIFIED, "NotFound", 404,
             "The operation couldn't be performed because object '%s' couldn't be found on "
             "'%s'.",
             id, dc_fqdn(iv->profile));
}

static void err_ambiguous(struct inv *iv, struct mx_error *e, const char *id)
{
    err_task(iv, e, X_AMBIG, EG_PS_ERR_NOT_SPECIFIED, NULL, 0,
             "The operation couldn't be performed because '%s' matches multiple entries.", id);
}

static void err_lookup(struct inv *iv, struct mx_error *e, int rc, const char *id)
{
    if (rc == EG_ECONFLICT)
        err_ambiguous(iv, e, id);
    else
        err_not_found(iv, e, id);
}

static void err_write_scope(struct inv *iv, struct mx_error *e, const char *id)
{
    err_task(iv, e, X_SCOPE, EG_PS_ERR_NOT_SPECIFIED, "Forbidden", 403,
             "The operation on mailbox \"%s\" failed because it's out of the current user's write "
             "scope. The object '%s' must be within the read scope before and after it's "
             "modified. Can't perform the save operation.",
             id, id);
}

static void err_duplicate(struct inv *iv, struct mx_error *e, const char *v)
{
    err_task(iv, e, X_INVOP, EG_PS_ERR_INVALID_OPERATION, NULL, 0,
             "The value \"%s\" is already present in the collection.", v);
}

static void err_list_cap(struct inv *iv, struct mx_error *e)
{
    err_task(iv, e, X_ADOP, EG_PS_ERR_NOT_SPECIFIED, NULL, 0,
             "Active Directory operation failed on %s. The administrative limit for this request "
             "was exceeded.",
             dc_fqdn(iv->profile));
}

static void record_error(struct inv *iv, const struct mx_error *e)
{
    json_t *j = json_pack("{s:s,s:s,s:s}", "exception_type", e->exception_type, "message",
                          e->message, "fqeid", e->fqeid);
    if (j)
        json_array_append_new(iv->errors, j);
}

/* ================================================================ emission (lock NOT held) */

static int emit_object(struct inv *iv, struct eg_ps_value *o)
{
    if (!o)
        return EG_ENOMEM;
    iv->n_objects++;
    if (!iv->out || !iv->out->object) {
        eg_ps_value_free(o);
        return 0;
    }
    int rc = iv->out->object(iv->ctx, o);
    if (rc != 0)
        iv->cb_rc = rc;
    return rc;
}

static int emit_warning(struct inv *iv, const char *text)
{
    if (iv->warnaction == ACT_SILENT || iv->warnaction == ACT_IGNORE)
        return 0;
    if (iv->warnaction == ACT_STOP) {
        /* -WarningAction Stop turns the warning into a terminating ActionPreferenceStopException */
        struct mx_error *e = iv->term;
        memset(e, 0, sizeof *e);
        snprintf(e->exception_type, sizeof e->exception_type, "%s",
                 "System.Management.Automation.ActionPreferenceStopException");
        snprintf(e->message, sizeof e->message,
                 "The running command stopped because the preference variable "
                 "\"WarningPreference\" or common parameter is set to Stop: %s",
                 text);
        snprintf(e->fqeid, sizeof e->fqeid, "ActionPreferenceStop");
        e->category = EG_PS_ERR_OPERATION_STOPPED;
        snprintf(e->category_reason, sizeof e->category_reason, "ActionPreferenceStopException");
        snprintf(e->activity, sizeof e->activity, "%s", iv->cmd ? iv->cmd->name : "");
        snprintf(e->rest_code, sizeof e->rest_code, "BadRequest");
        e->http_status = 400;
        category_line(e);
        return EG_EREMOTE;
    }
    if (!iv->out || !iv->out->warning)
        return 0;
    int rc = iv->out->warning(iv->ctx, text);
    if (rc != 0)
        iv->cb_rc = rc;
    return rc;
}

/* A task error: non-terminating (ERROR_RECORD) unless -ErrorAction Stop or the behaviour says
 * terminating; -ErrorAction SilentlyContinue / Ignore drop it (it is still recorded). */
static int emit_error(struct inv *iv, const struct mx_error *e)
{
    if (iv->erraction == ACT_STOP || iv->task_terminating) {
        *iv->term = *e;
        return EG_EREMOTE;
    }
    record_error(iv, e);
    if (iv->erraction == ACT_SILENT || iv->erraction == ACT_IGNORE)
        return 0;
    if (!iv->out || !iv->out->error)
        return 0;
    int rc = iv->out->error(iv->ctx, e);
    if (rc != 0)
        iv->cb_rc = rc;
    return rc;
}

/* ================================================================ parameter binding */

/* The value read through extended-primitive wrappers (<Obj><S>x</S></Obj>, enums). */
static const struct eg_ps_value *unwrap(const struct eg_ps_value *v)
{
    while (v && v->kind == EG_PS_OBJ && v->u.obj->base && v->u.obj->container == EG_PS_CT_NONE)
        v = v->u.obj->base;
    return v;
}

static bool is_int_kind(enum eg_ps_kind k)
{
    return k == EG_PS_SB || k == EG_PS_I16 || k == EG_PS_I32 || k == EG_PS_I64 || k == EG_PS_BY ||
           k == EG_PS_U16 || k == EG_PS_U32 || k == EG_PS_U64;
}

static bool is_list(const struct eg_ps_value *v)
{
    return v && v->kind == EG_PS_OBJ &&
           (v->u.obj->container == EG_PS_CT_LST || v->u.obj->container == EG_PS_CT_IE ||
            v->u.obj->container == EG_PS_CT_STK || v->u.obj->container == EG_PS_CT_QUE);
}

/* How PowerShell would show a value in a message. */
static void value_text(const struct eg_ps_value *v, char *buf, size_t size)
{
    const struct eg_ps_value *u = unwrap(v);
    if (!u || u->kind == EG_PS_NIL) {
        snprintf(buf, size, "%s", "");
    } else if (u->kind == EG_PS_S || u->kind == EG_PS_URI || u->kind == EG_PS_D ||
               u->kind == EG_PS_DT || u->kind == EG_PS_TS || u->kind == EG_PS_VERSION) {
        snprintf(buf, size, "%s", u->text.s);
    } else if (u->kind == EG_PS_B) {
        snprintf(buf, size, "%s", u->u.b ? "True" : "False");
    } else if (u->kind == EG_PS_G) {
        char g[40];
        mx_guid_text(u->u.guid, g);
        snprintf(buf, size, "%s", g);
    } else if (is_int_kind(u->kind)) {
        int64_t i;
        uint64_t q;
        if (eg_ps_get_int64(u, &i) == 0)
            snprintf(buf, size, "%lld", (long long)i);
        else if (eg_ps_get_uint64(u, &q) == 0)
            snprintf(buf, size, "%llu", (unsigned long long)q);
        else
            snprintf(buf, size, "%s", "0");
    } else if (u->kind == EG_PS_OBJ && u->u.obj->has_to_string) {
        snprintf(buf, size, "%s", u->u.obj->to_string.s);
    } else if (is_list(u)) {
        snprintf(buf, size, "%s", "System.Object[]");
    } else if (u->kind == EG_PS_OBJ && eg_ps_type_name(u, 0)) {
        snprintf(buf, size, "%s", eg_ps_type_name(u, 0));
    } else {
        snprintf(buf, size, "%s", eg_ps_kind_tag(u->kind));
    }
}

/* The .NET type PowerShell would name for a value. */
static const char *value_type(const struct eg_ps_value *v)
{
    const struct eg_ps_value *u = unwrap(v);
    if (!u)
        return "System.Object";
    switch (u->kind) {
    case EG_PS_S:
        return "System.String";
    case EG_PS_B:
        return "System.Boolean";
    case EG_PS_I32:
        return "System.Int32";
    case EG_PS_I64:
        return "System.Int64";
    case EG_PS_DT:
        return "System.DateTime";
    case EG_PS_G:
        return "System.Guid";
    case EG_PS_OBJ:
        if (is_list(u))
            return "System.Object[]";
        if (u->u.obj->container == EG_PS_CT_DCT)
            return "System.Collections.Hashtable";
        return eg_ps_type_name(u, 0) ? eg_ps_type_name(u, 0)
                                     : "System.Management.Automation.PSObject";
    default:
        return "System.Object";
    }
}

static int bind_missing_argument(struct inv *iv, const struct pdef *d)
{
    return err_ps(iv, X_BIND, "MissingArgument", EG_PS_ERR_INVALID_ARGUMENT,
                  "Missing an argument for parameter '%s'. Specify a parameter of type '%s' and "
                  "try again.",
                  d->name, d->type);
}

static int bind_bool_error(struct inv *iv, const struct pdef *d, const struct eg_ps_value *v,
                           const char *target)
{
    const struct eg_ps_value *u = unwrap(v);
    return err_ps(iv, X_TRANSFORM, "ParameterArgumentTransformationError", EG_PS_ERR_INVALID_DATA,
                  "Cannot process argument transformation on parameter '%s'. Cannot convert value "
                  "\"%s\" to type \"%s\". Boolean parameters accept only Boolean values and "
                  "numbers, such as $True, $False, 1 or 0.",
                  d->name, u && u->kind != EG_PS_NIL ? value_type(u) : "", target);
}

static int to_bool(const struct eg_ps_value *u, bool *ret)
{
    if (u->kind == EG_PS_B) {
        *ret = u->u.b;
        return 0;
    }
    if (is_int_kind(u->kind)) {
        int64_t i = 0;
        uint64_t q = 0;
        if (eg_ps_get_int64(u, &i) == 0)
            *ret = i != 0;
        else if (eg_ps_get_uint64(u, &q) == 0)
            *ret = q != 0;
        return 0;
    }
    return EG_EINVAL;
}

static int bind_null_not_allowed(struct inv *iv, const struct pdef *d)
{
    return err_ps(iv, X_VALIDATE, "ParameterArgumentValidationErrorNullNotAllowed",
                  EG_PS_ERR_INVALID_DATA,
                  "Cannot bind argument to parameter '%s' because it is null.", d->name);
}

/* Scalar string forms: S, an Obj whose base is a string, numbers, GUIDs. 0 or EG_EINVAL. */
static int scalar_string(const struct eg_ps_value *v, struct bval *b)
{
    const struct eg_ps_value *u = unwrap(v);
    if (u->kind == EG_PS_S || u->kind == EG_PS_URI) {
        b->s = u->text.s;
        return 0;
    }
    if (u->kind == EG_PS_G) {
        mx_guid_text(u->u.guid, b->buf);
        b->s = b->buf;
        return 0;
    }
    if (is_int_kind(u->kind)) {
        value_text(u, b->buf, sizeof b->buf);
        b->s = b->buf;
        return 0;
    }
    return EG_EINVAL;
}

static int bind_id(struct inv *iv, const struct pdef *d, const struct eg_ps_value *v,
                   struct bval *b)
{
    const struct eg_ps_value *u = unwrap(v);
    if (u->kind == EG_PS_NIL) {
        b->null = true;
        return 0;
    }
    if (scalar_string(u, b) == 0) {
        if (!*b->s)
            return err_ps(iv, X_VALIDATE, "ParameterArgumentValidationErrorEmptyStringNotAllowed",
                          EG_PS_ERR_INVALID_DATA,
                          "Cannot bind argument to parameter '%s' because it is an empty string.",
                          d->name);
        return 0;
    }
    if (is_list(u))
        return err_ps(iv, X_BIND, "CannotConvertArgument", EG_PS_ERR_INVALID_ARGUMENT,
                      "Cannot convert '%s' to the type '%s' required by parameter '%s'. Specified "
                      "method is not supported.",
                      "System.Object[]", d->type, d->name);
    /* A (deserialized) object passed as identity (§12): refused. */
    char shown[256], type[300];
    const char *idp = NULL;
    if (eg_ps_get_string(eg_ps_obj_prop(u, "Identity"), &idp, NULL) == 0)
        snprintf(shown, sizeof shown, "%s", idp);
    else
        value_text(u, shown, sizeof shown);
    const char *tn = value_type(u);
    if (strncmp(tn, "Deserialized.", 13) == 0 || u->kind != EG_PS_OBJ || !eg_ps_type_name(u, 0))
        snprintf(type, sizeof type, "%s", tn);
    else
        snprintf(type, sizeof type, "Deserialized.%s", tn);
    return err_ps(iv, X_TRANSFORM, "ParameterArgumentTransformationError", EG_PS_ERR_INVALID_DATA,
                  "Cannot process argument transformation on parameter '%s'. Cannot convert the "
                  "\"%s\" value of type \"%s\" to type \"%s\".",
                  d->name, shown, type, d->type);
}

static int mvp_transform_error(struct inv *iv, const struct pdef *d, const struct eg_ps_value *v)
{
    char shown[256];
    value_text(v, shown, sizeof shown);
    return err_ps(iv, X_TRANSFORM, "ParameterArgumentTransformationError", EG_PS_ERR_INVALID_DATA,
                  "Cannot process argument transformation on parameter '%s'. Cannot convert the "
                  "\"%s\" value of type \"%s\" to type \"%s\".",
                  d->name, shown, value_type(v), d->type);
}

/* Strings of one side of a MultiValuedProperty value: a scalar or a list; Nil = none. */
static int mvp_strings(const struct eg_ps_value *v, char ***ret, size_t *ret_n)
{
    const struct eg_ps_value *u = unwrap(v);
    if (!u || u->kind == EG_PS_NIL) {
        *ret = NULL;
        *ret_n = 0;
        return 0;
    }
    if (is_list(u))
        return eg_ps_get_string_array(u, ret, ret_n);
    struct bval tmp;
    memset(&tmp, 0, sizeof tmp);
    if (scalar_string(u, &tmp) != 0)
        return EG_EINVAL;
    char **a = eg_calloc(2, sizeof *a);
    if (!a)
        return EG_ENOMEM;
    a[0] = eg_strdup(tmp.s);
    if (!a[0]) {
        eg_free(a);
        return EG_ENOMEM;
    }
    *ret = a;
    *ret_n = 1;
    return 0;
}

static int bind_mvp(struct inv *iv, const struct pdef *d, const struct eg_ps_value *v,
                    struct bval *b)
{
    const struct eg_ps_value *u = unwrap(v);
    struct mvp *m = &b->mvp;
    int rc;
    if (u->kind == EG_PS_NIL) {
        m->clear = true;
        b->null = true;
        return 0;
    }
    if (u->kind == EG_PS_OBJ && u->u.obj->container == EG_PS_CT_DCT) {
        m->edit = true;
        for (size_t i = 0; i < u->u.obj->n_entries; i++) {
            const struct eg_ps_entry *en = &u->u.obj->entries[i];
            const char *k = NULL;
            const struct eg_ps_value *ku = unwrap(en->key);
            if (ku->kind == EG_PS_S)
                k = ku->text.s;
            char ***dst = NULL;
            size_t *dn = NULL;
            if (k && strcasecmp(k, "Add") == 0) {
                dst = &m->add;
                dn = &m->n_add;
            } else if (k && strcasecmp(k, "Remove") == 0) {
                dst = &m->rem;
                dn = &m->n_rem;
            } else {
                return mvp_transform_error(iv, d, v);
            }
            eg_ps_string_array_free(*dst, *dn);
            *dst = NULL;
            *dn = 0;
            if ((rc = mvp_strings(en->value, dst, dn)) != 0)
                return rc == EG_ENOMEM ? rc : mvp_transform_error(iv, d, v);
        }
        return 0;
    }
    m->replace = true;
    if ((rc = mvp_strings(u, &m->repl, &m->n_repl)) != 0)
        return rc == EG_ENOMEM ? rc : mvp_transform_error(iv, d, v);
    return 0;
}

static int enum_index(const char *const *names, const char *s)
{
    for (int i = 0; names[i]; i++)
        if (strcasecmp(names[i], s) == 0)
            return i;
    return -1;
}

static int bind_enum(struct inv *iv, const struct pdef *d, const struct eg_ps_value *v,
                     struct bval *b)
{
    const struct eg_ps_value *u = unwrap(v);
    char shown[256];
    int idx = -1;
    size_t count = 0;
    while (d->enums[count])
        count++;
    if (u->kind == EG_PS_NIL)
        return err_ps(iv, X_BIND, "CannotConvertArgumentNoMessage", EG_PS_ERR_INVALID_ARGUMENT,
                      "Cannot bind parameter '%s'. Cannot convert null to type \"%s\".", d->name,
                      d->type);
    /* an enum object: its ToString names the value */
    const char *name = NULL;
    if (v->kind == EG_PS_OBJ && v->u.obj->has_to_string)
        name = v->u.obj->to_string.s;
    else if (u->kind == EG_PS_S)
        name = u->text.s;
    if (name) {
        idx = enum_index(d->enums, name);
    } else if (is_int_kind(u->kind)) {
        int64_t i = -1;
        if (eg_ps_get_int64(u, &i) == 0 && i >= 0 && (size_t)i < count)
            idx = (int)i;
    }
    if (idx >= 0) {
        b->n = idx;
        b->s = d->enums[idx];
        return 0;
    }
    value_text(v, shown, sizeof shown);
    char list[256] = "";
    for (size_t i = 0; i < count; i++) {
        size_t l = strlen(list);
        snprintf(list + l, sizeof list - l, "%s%s", i ? ", " : "", d->enums[i]);
    }
    return err_ps(iv, X_BIND, "CannotConvertArgumentNoMessage", EG_PS_ERR_INVALID_ARGUMENT,
                  "Cannot bind parameter '%s'. Cannot convert value \"%s\" to type \"%s\". Error: "
                  "\"Unable to match the identifier name %s to a valid enumerator name. Specify "
                  "one of the following enumerator names and try again:\r\n%s\"",
                  d->name, shown, d->type, shown, list);
}

static int bind_result_size(struct inv *iv, const struct pdef *d, const struct eg_ps_value *v,
                            struct bval *b)
{
    const struct eg_ps_value *u = unwrap(v);
    char shown[256];
    int64_t n = 0;
    if (u->kind == EG_PS_NIL)
        return bind_null_not_allowed(iv, d);
    if (u->kind == EG_PS_S && strcasecmp(u->text.s, "Unlimited") == 0) {
        b->n = -1;
        return 0;
    }
    if ((u->kind == EG_PS_S && eg_parse_int64(u->text.s, 1, UINT32_MAX, &n) == 0) ||
        (is_int_kind(u->kind) && eg_ps_get_int64(u, &n) == 0 && n >= 1 && n <= UINT32_MAX)) {
        b->n = n;
        return 0;
    }
    value_text(v, shown, sizeof shown);
    return err_ps(iv, X_BIND, "CannotConvertArgumentNoMessage", EG_PS_ERR_INVALID_ARGUMENT,
                  "Cannot bind parameter '%s'. Cannot convert value \"%s\" to type \"%s\". Error: "
                  "\"The value must be Unlimited or a whole number from 1 to 4294967295.\"",
                  d->name, shown, d->type);
}

/* Convert v for parameter d into b. 0, EG_EREMOTE (term filled), EG_ENOMEM. */
static int bind_value(struct inv *iv, const struct pdef *d, const struct eg_ps_value *v,
                      struct bval *b)
{
    b->v = v;
    if (!v && d->kind != PK_SWITCH && d->kind != PK_ANY)
        return bind_missing_argument(iv, d);
    const struct eg_ps_value *u = unwrap(v);
    switch (d->kind) {
    case PK_SWITCH:
        if (!u || u->kind == EG_PS_NIL) {
            b->b = true; /* present (pypsrp sends switches as Nil) */
            return 0;
        }
        if (to_bool(u, &b->b) != 0)
            return bind_bool_error(iv, d, v, T_SW);
        return 0;
    case PK_BOOL:
        if (u->kind == EG_PS_NIL || to_bool(u, &b->b) != 0)
            return bind_bool_error(iv, d, v, T_BOOL);
        return 0;
    case PK_STRING:
        if (u->kind == EG_PS_NIL) {
            b->null = true;
            return 0;
        }
        if (scalar_string(u, b) == 0)
            return 0;
        if (u->kind == EG_PS_OBJ && u->u.obj->has_to_string && !is_list(u)) {
            b->s = u->u.obj->to_string.s;
            return 0;
        }
        if (u->kind == EG_PS_B || u->kind == EG_PS_DT || u->kind == EG_PS_D) {
            value_text(u, b->buf, sizeof b->buf);
            b->s = b->buf;
            return 0;
        }
        return err_ps(iv, X_BIND, "CannotConvertArgument", EG_PS_ERR_INVALID_ARGUMENT,
                      "Cannot convert '%s' to the type '%s' required by parameter '%s'. Specified "
                      "method is not supported.",
                      value_type(u), d->type, d->name);
    case PK_ID:
        return bind_id(iv, d, v, b);
    case PK_MVP:
        return bind_mvp(iv, d, v, b);
    case PK_RESULTSIZE:
        return bind_result_size(iv, d, v, b);
    case PK_ENUM:
    case PK_ACTION:
        return bind_enum(iv, d, v, b);
    case PK_STRINGS: {
        if (u->kind == EG_PS_NIL) {
            b->null = true;
            return 0;
        }
        int rc = mvp_strings(u, &b->strs, &b->n_strs);
        if (rc == EG_ENOMEM)
            return rc;
        if (rc != 0)
            return mvp_transform_error(iv, d, v);
        return 0;
    }
    case PK_ANY:
        return 0;
    }
    return 0;
}

/* The visible parameters of the cmdlet in this profile under the RBAC profile (lock held). */
static void visible_params(struct inv *iv)
{
    const struct cdef *c = iv->cmd;
    iv->n_vis = 0;
    for (size_t i = 0; i < c->n_params && iv->n_vis < NELEM(iv->vis); i++)
        if (pf_has(iv, c->params[i].profiles) &&
            !mx_rbac_param_hidden(iv->org, c->name, c->params[i].name))
            iv->vis[iv->n_vis++] = &c->params[i];
    if (c->flags & CF_SP) {
        if (!mx_rbac_param_hidden(iv->org, c->name, "Confirm"))
            iv->vis[iv->n_vis++] = &PD_CONFIRM;
        if (!mx_rbac_param_hidden(iv->org, c->name, "WhatIf"))
            iv->vis[iv->n_vis++] = &PD_WHATIF;
    }
    for (size_t i = 0; i < NELEM(P_COMMON) && iv->n_vis < NELEM(iv->vis); i++)
        iv->vis[iv->n_vis++] = &P_COMMON[i];
}

/* Resolve a parameter name as PowerShell does: exact name or alias, else a unique prefix.
 * Returns the index in vis, or -1 with term filled. */
static int resolve_param(struct inv *iv, const char *name)
{
    for (size_t i = 0; i < iv->n_vis; i++)
        if (strcasecmp(iv->vis[i]->name, name) == 0)
            return (int)i;
    for (size_t a = 0; a < NELEM(ALIASES); a++)
        if (strcasecmp(ALIASES[a].alias, name) == 0)
            for (size_t i = 0; i < iv->n_vis; i++)
                if (strcasecmp(iv->vis[i]->name, ALIASES[a].name) == 0)
                    return (int)i;
    size_t len = strlen(name), hits = 0;
    int hit = -1;
    char list[600] = "";
    for (size_t i = 0; len && i < iv->n_vis; i++) {
        if (strncasecmp(iv->vis[i]->name, name, len) != 0)
            continue;
        hits++;
        hit = (int)i;
        size_t l = strlen(list);
        snprintf(list + l, sizeof list - l, " -%s", iv->vis[i]->name);
    }
    if (hits == 1)
        return hit;
    if (hits > 1) {
        err_ps(iv, X_BIND, "AmbiguousParameter", EG_PS_ERR_INVALID_ARGUMENT,
               "Parameter cannot be processed because the parameter name '%s' is ambiguous. "
               "Possible matches include:%s.",
               name, list);
        return -1;
    }
    err_ps(iv, X_BIND, "NamedParameterNotFound", EG_PS_ERR_INVALID_ARGUMENT,
           "A parameter cannot be found that matches parameter name '%s'.", name);
    return -1;
}

/* Bind every parameter (lock held). 0, EG_EREMOTE (term filled), EG_ENOMEM. */
static int bind(struct inv *iv, const struct mx_param *params, size_t n)
{
    int rc;
    visible_params(iv);
    memset(iv->bv, 0, sizeof iv->bv);
    /* named parameters first */
    for (size_t i = 0; i < n; i++) {
        if (!params[i].name)
            continue;
        char name[160];
        const char *p = params[i].name;
        if (*p == '-')
            p++;
        snprintf(name, sizeof name, "%s", p);
        size_t l = strlen(name);
        if (l && name[l - 1] == ':')
            name[l - 1] = '\0';
        int k = resolve_param(iv, name);
        if (k < 0)
            return EG_EREMOTE;
        struct bval *b = &iv->bv[k];
        if (b->set)
            return err_ps(iv, X_BIND, "ParameterAlreadyBound", EG_PS_ERR_INVALID_ARGUMENT,
                          "Cannot bind parameter because parameter '%s' is specified more than "
                          "once. To provide multiple values to parameters that can accept "
                          "multiple values, use the array syntax. For example, \"-parameter "
                          "value1,value2,value3\".",
                          iv->vis[k]->name);
        b->set = true;
        b->given = params[i].name;
        if ((rc = bind_value(iv, iv->vis[k], params[i].value, b)) != 0)
            return rc;
    }
    /* then positional arguments, in position order */
    for (size_t i = 0; i < n; i++) {
        if (params[i].name)
            continue;
        int k = -1;
        for (int pos = 0; pos < 8 && k < 0; pos++)
            for (size_t j = 0; j < iv->n_vis && k < 0; j++)
                if (iv->vis[j]->position == pos && !iv->bv[j].set)
                    k = (int)j;
        if (k < 0) {
            char shown[256];
            value_text(params[i].value, shown, sizeof shown);
            return err_ps(iv, X_BIND, "PositionalParameterNotFound", EG_PS_ERR_INVALID_ARGUMENT,
                          "A positional parameter cannot be found that accepts argument '%s'.",
                          shown);
        }
        struct bval *b = &iv->bv[k];
        b->set = true;
        b->given = NULL;
        const struct eg_ps_value *v = params[i].value;
        static struct eg_ps_value nil = {.kind = EG_PS_NIL};
        if ((rc = bind_value(iv, iv->vis[k], v ? v : &nil, b)) != 0)
            return rc;
    }
    /* mandatory parameters */
    char missing[512] = "";
    for (size_t j = 0; j < iv->n_vis; j++) {
        if (!iv->vis[j]->mandatory)
            continue;
        if (iv->bv[j].set && iv->bv[j].null)
            return bind_null_not_allowed(iv, iv->vis[j]);
        if (!iv->bv[j].set) {
            size_t l = strlen(missing);
            snprintf(missing + l, sizeof missing - l, "%s%s", l ? " " : "", iv->vis[j]->name);
        }
    }
    if (*missing)
        return err_ps(iv, X_BIND, "MissingMandatoryParameter", EG_PS_ERR_INVALID_ARGUMENT,
                      "Cannot process command because of one or more missing mandatory "
                      "parameters: %s.",
                      missing);
    /* common and ShouldProcess parameters */
    const struct bval *b = arg(iv, "ErrorAction");
    iv->erraction = b->set ? (int)b->n : -1;
    b = arg(iv, "WarningAction");
    iv->warnaction = b->set ? (int)b->n : -1;
    b = arg(iv, "Confirm");
    iv->confirm_set = b->set;
    iv->confirm = b->set && b->b;
    b = arg(iv, "WhatIf");
    iv->whatif = b->set && b->b;
    return 0;
}

static int ambiguous_set(struct inv *iv)
{
    return err_ps(iv, X_BIND, "AmbiguousParameterSet", EG_PS_ERR_INVALID_ARGUMENT,
                  "Parameter set cannot be resolved using the specified named parameters.");
}

/* The confirmation prompt of a ShouldProcess cmdlet: true when it would be shown (and fail,
 * there being no interactive host). -WhatIf wins over everything. */
static bool needs_prompt(const struct inv *iv)
{
    if (iv->whatif)
        return false;
    if (iv->confirm_set)
        return iv->confirm;
    return (iv->cmd->flags & CF_HIGH) != 0;
}

static int prompt_failure(struct inv *iv, const char *query)
{
    return err_ps(iv, X_HOST, "HostException", EG_PS_ERR_RESOURCE_UNAVAILABLE,
                  "A command that prompts the user failed because the host program or the command "
                  "type does not support user interaction. The host was attempting to request "
                  "confirmation with the following message: %s",
                  query);
}

static int filter_error(struct inv *iv, const char *param, const char *msg)
{
    return err_ps(iv, X_BIND, "ParameterBindingFailed", EG_PS_ERR_INVALID_ARGUMENT,
                  "Cannot bind parameter '%s' to the target. Exception setting \"%s\": \"%s\"",
                  param, param, msg);
}

/* ================================================================ output objects (lock held) */

/* Builds one Exchange object: type names, ToString, adapted properties in <Props>. The first
 * failure sticks (rc) and later calls do nothing; a property selection (sel, NULL-terminated
 * names) keeps only the listed properties. */
struct ob {
    struct eg_ps_value *o;
    int rc;
    const char *const *sel;
    size_t n_sel;
};

static void ob_start(struct ob *b, const char *const *tn, size_t ntn, const char *tostring)
{
    memset(b, 0, sizeof *b);
    b->o = eg_ps_new_obj();
    if (!b->o) {
        b->rc = EG_ENOMEM;
        return;
    }
    b->rc = eg_ps_obj_set_types(b->o, tn, ntn);
    if (b->rc == 0 && tostring)
        b->rc = eg_ps_obj_set_to_string(b->o, tostring, strlen(tostring));
}

static bool ob_want(const struct ob *b, const char *name)
{
    if (b->rc)
        return false;
    if (!b->sel)
        return true;
    for (size_t i = 0; i < b->n_sel; i++)
        if (strcasecmp(b->sel[i], name) == 0)
            return true;
    return false;
}

static void ob_add(struct ob *b, const char *name, struct eg_ps_value *v)
{
    if (!ob_want(b, name)) {
        eg_ps_value_free(v);
        return;
    }
    b->rc = eg_ps_obj_add_prop(b->o, name, v);
}

static void p_str(struct ob *b, const char *name, const char *s)
{
    if (ob_want(b, name))
        ob_add(b, name, s ? eg_ps_new_string(s) : eg_ps_new_nil());
}

static void p_bool(struct ob *b, const char *name, bool v)
{
    if (ob_want(b, name))
        ob_add(b, name, eg_ps_new_bool(v));
}

static void p_i32(struct ob *b, const char *name, int32_t v)
{
    if (ob_want(b, name))
        ob_add(b, name, eg_ps_new_i32(v));
}

static void p_nil(struct ob *b, const char *name)
{
    if (ob_want(b, name))
        ob_add(b, name, eg_ps_new_nil());
}

/* DateTime, or Nil for 0. */
static void p_dt(struct ob *b, const char *name, int64_t ms)
{
    if (ob_want(b, name))
        ob_add(b, name, ms ? eg_ps_new_datetime(ms) : eg_ps_new_nil());
}

static void p_guid(struct ob *b, const char *name, const uint8_t g[16])
{
    if (ob_want(b, name))
        ob_add(b, name, eg_ps_new_guid(g));
}

static struct eg_ps_value *mk_list(const char *const *tn, size_t ntn, char *const *items, size_t n)
{
    struct eg_ps_value *l = eg_ps_new_list(tn, ntn);
    if (!l)
        return NULL;
    for (size_t i = 0; i < n; i++)
        if (eg_ps_obj_add_item(l, eg_ps_new_string(items[i])) != 0) {
            eg_ps_value_free(l);
            return NULL;
        }
    return l;
}

static void p_list(struct ob *b, const char *name, const char *const *tn, size_t ntn,
                   char *const *items, size_t n)
{
    if (ob_want(b, name))
        ob_add(b, name, mk_list(tn, ntn, items, n));
}

static void p_strv(struct ob *b, const char *name, const struct mx_strv *sv)
{
    p_list(b, name, TN_MVP_STR, NELEM(TN_MVP_STR), sv->v, sv->n);
}

static struct eg_ps_value *ob_done(struct ob *b, int *rc)
{
    if (b->rc) {
        eg_ps_value_free(b->o);
        b->o = NULL;
        *rc = b->rc;
        return NULL;
    }
    return b->o;
}

static const char *exchange_version(enum mx_profile p)
{
    return p == MX_PROFILE_2010 ? "0.10 (14.0.100.0)" : "0.20 (15.0.0.0)";
}

static const char *org_dn_suffix(enum mx_profile p)
{
    return p == MX_PROFILE_ONLINE
               ? "CN=Configuration,CN=contoso.onmicrosoft.com,CN=ConfigurationUnits,DC=EURPR01A001,"
                 "DC=prod,DC=outlook,DC=com"
               : "CN=Contoso,CN=Microsoft Exchange,CN=Services,CN=Configuration,DC=contoso,"
                 "DC=example";
}

static const char *organization_id(enum mx_profile p)
{
    return p == MX_PROFILE_ONLINE
               ? "EURPR01A001.prod.outlook.com/Microsoft Exchange Hosted "
                 "Organizations/contoso.onmicrosoft.com - "
                 "EURPR01A001.prod.outlook.com/ConfigurationUnits/contoso.onmicrosoft.com/"
                 "Configuration"
               : "";
}

static const char *object_category(enum mx_profile p, const char *cls)
{
    static __thread char buf[160];
    snprintf(buf, sizeof buf, "%s/Configuration/Schema/%s",
             p == MX_PROFILE_ONLINE ? "EURPR01A001.prod.outlook.com" : "contoso.example", cls);
    return buf;
}

/* The ADObject tail every directory object ends with. */
static void p_adobject(struct inv *iv, struct ob *b, const char *identity, const char *name,
                       const char *dn, const uint8_t guid[16], const char *category,
                       char *const *classes, size_t n_classes, int64_t created, int64_t changed,
                       const char *version)
{
    bool online = iv->profile == MX_PROFILE_ONLINE;
    p_str(b, "Identity", identity);
    if (!online)
        p_bool(b, "IsValid", true);
    p_str(b, "ExchangeVersion", version ? version : exchange_version(iv->profile));
    p_str(b, "Name", name);
    p_str(b, "DistinguishedName", dn);
    p_guid(b, "Guid", guid);
    p_str(b, "ObjectCategory", object_category(iv->profile, category));
    p_list(b, "ObjectClass", TN_MVP_STR, NELEM(TN_MVP_STR), classes, n_classes);
    p_dt(b, "WhenChanged", changed);
    p_dt(b, "WhenCreated", created);
    p_dt(b, "WhenChangedUTC", changed);
    p_dt(b, "WhenCreatedUTC", created);
    p_str(b, "OrganizationId", organization_id(iv->profile));
    p_str(b, "Id", identity);
    if (!online)
        p_str(b, "OriginatingServer", dc_fqdn(iv->profile));
    p_str(b, "ObjectState", "Unchanged");
}

static const char *policy_shown(const struct mx_mailbox *m)
{
    return m->policy ? m->policy : "Default";
}

/* "SMTP:<primary>" / "smtp:<proxy>" of a ProxyAddressCollection. */
static struct eg_ps_value *smtp_entry(const char *addr, bool primary)
{
    char buf[EG_MAX_MAILBOX_LEN + 8];
    snprintf(buf, sizeof buf, "%s:%s", primary ? "SMTP" : "smtp", addr);
    return eg_ps_new_string(buf);
}

/* Get-CASMailbox output. show_debug: -ActiveSyncDebugLogging was given (else it reads false). */
static struct eg_ps_value *mk_casmailbox(struct inv *iv, const struct mx_mailbox *m,
                                         bool show_debug, const char *const *sel, size_t n_sel,
                                         int *rc)
{
    struct ob b;
    bool online = iv->profile == MX_PROFILE_ONLINE;
    char g[40], srv_dn[256], srv[32];
    ob_start(&b, TN_CASMAILBOX, NELEM(TN_CASMAILBOX), m->name);
    b.sel = sel;
    b.n_sel = n_sel;

    /* EmailAddresses: SMTP:primary, smtp:proxies */
    struct eg_ps_value *ea = eg_ps_new_list(TN_PROXY, NELEM(TN_PROXY));
    if (ea && eg_ps_obj_add_item(ea, smtp_entry(m->smtp, true)) != 0)
        ea = NULL;
    for (uint32_t i = 0; ea && i < m->n_proxies; i++)
        if (eg_ps_obj_add_item(ea, smtp_entry(m->proxies[i], false)) != 0)
            ea = NULL;
    if (!ea && !b.rc)
        b.rc = EG_ENOMEM;
    ob_add(&b, "EmailAddresses", ea);
    p_str(&b, "LegacyExchangeDN", m->legacy_dn);
    p_str(&b, "LinkedMasterAccount", "");
    p_str(&b, "PrimarySmtpAddress", m->smtp);
    p_str(&b, "SamAccountName", m->alias);
    snprintf(srv, sizeof srv, "%s", server_name(iv->profile));
    for (char *p = srv; *p; p++)
        if (*p >= 'A' && *p <= 'Z')
            *p = (char)(*p - 'A' + 'a');
    snprintf(srv_dn, sizeof srv_dn,
             "/o=%s/ou=Exchange Administrative Group (FYDIBOHF23SPDLT)/cn=Configuration/cn=Servers/"
             "cn=%s",
             online ? "ExchangeLabs" : "Contoso", server_name(iv->profile));
    p_str(&b, "ServerLegacyDN", srv_dn);
    p_str(&b, "ServerName", srv);
    p_str(&b, "DisplayName", m->display);
    p_strv(&b, "ActiveSyncAllowedDeviceIDs", &m->allowed);
    p_strv(&b, "ActiveSyncBlockedDeviceIDs", &m->blocked);
    p_str(&b, "ActiveSyncMailboxPolicy", policy_shown(m));
    p_bool(&b, "ActiveSyncMailboxPolicyIsDefaulted", m->policy_defaulted);
    p_bool(&b, "ActiveSyncDebugLogging", show_debug && m->debug_logging);
    p_bool(&b, "ActiveSyncEnabled", m->as_enabled);
    p_bool(&b, "HasActiveSyncDevicePartnership", mx_has_partnership(iv->org, m));
    if (pf_has(iv, PF_2016UP))
        p_bool(&b, "ActiveSyncSuppressReadReceipt", m->suppress_rr);
    p_bool(&b, "OWAEnabled", true);
    if (pf_has(iv, PF_2013UP))
        p_bool(&b, "OWAforDevicesEnabled", true);
    p_bool(&b, "ECPEnabled", true);
    p_bool(&b, "PopEnabled", true);
    p_bool(&b, "ImapEnabled", true);
    p_bool(&b, "MAPIEnabled", true);
    p_bool(&b, "EwsEnabled", true);
    if (online)
        mx_guid_text(m->ext_id, g);
    p_str(&b, "ExternalDirectoryObjectId", online ? g : "");
    char *classes[] = {"top", "person", "organizationalPerson", "user"};
    p_adobject(iv, &b, m->identity, m->name, m->dn, m->guid, "Person", classes, NELEM(classes),
               m->when_created, m->when_changed, NULL);
    return ob_done(&b, rc);
}

static bool legacy_name(const struct inv *iv)
{
    return (iv->cmd->flags & CF_LEGACY) != 0;
}

/* Get-MobileDevice / Get-ActiveSyncDevice output. */
static struct eg_ps_value *mk_device(struct inv *iv, const struct mx_device *d, int *rc)
{
    struct ob b;
    const struct mx_mailbox *m = &iv->org->mbx[d->mailbox];
    char name[256], ident[768], dn[1024], imei[32], phone[32];
    bool v2010 = iv->profile == MX_PROFILE_2010;
    mx_device_name(d, name, sizeof name);
    mx_device_identity(iv->org, d, ident, sizeof ident);
    mx_device_dn(iv->org, d, dn, sizeof dn);
    mx_device_imei(d, imei, sizeof imei);
    mx_device_phone(d, phone, sizeof phone);
    if (v2010)
        ob_start(&b, TN_ASDEVICE_2010, NELEM(TN_ASDEVICE_2010), name);
    else if (legacy_name(iv))
        ob_start(&b, TN_ASDEVICE_2013, NELEM(TN_ASDEVICE_2013), name);
    else
        ob_start(&b, TN_MOBILEDEVICE, NELEM(TN_MOBILEDEVICE), name);
    p_str(&b, "FriendlyName", d->friendly);
    p_str(&b, "DeviceId", d->device_id);
    p_str(&b, "DeviceImei", imei);
    p_str(&b, "DeviceMobileOperator", d->oper);
    p_str(&b, "DeviceOS", d->os);
    p_str(&b, "DeviceOSLanguage", d->os_lang);
    p_str(&b, "DeviceTelephoneNumber", phone);
    p_str(&b, "DeviceType", d->type);
    p_str(&b, "DeviceUserAgent", d->ua);
    p_str(&b, "DeviceModel", d->model);
    p_dt(&b, "FirstSyncTime", d->first_sync);
    p_str(&b, "UserDisplayName", m->canonical);
    p_str(&b, "DeviceAccessState", mx_state_name(d->state));
    p_str(&b, "DeviceAccessStateReason", mx_reason_name(d->reason));
    p_str(&b, "DeviceAccessControlRule", d->rule);
    if (!v2010) {
        p_str(&b, "ClientVersion", d->client_version);
        p_str(&b, "ClientType", d->client_type);
    }
    p_str(&b, "DeviceActiveSyncVersion", d->eas);
    if (pf_has(iv, PF_2016UP)) {
        p_bool(&b, "IsManaged", false);
        p_bool(&b, "IsCompliant", false);
        p_bool(&b, "IsDisabled", false);
    }
    if (!v2010)
        p_i32(&b, "ProvisioningFlags", 0);
    p_str(&b, "AdminDisplayName", "");
    if (iv->profile == MX_PROFILE_ONLINE)
        p_guid(&b, "ExchangeObjectId", d->guid);
    char *classes[] = {"top", "msExchActiveSyncDevice"};
    p_adobject(iv, &b, ident, name, dn, d->guid, "ms-Exch-Active-Sync-Device", classes,
               NELEM(classes), d->created, d->changed, "0.10 (14.0.100.0)");
    return ob_done(&b, rc);
}

struct stats_opts {
    bool mailbox_log, recovery_password, exo;
};

static const char *status_note(const char *status)
{
    if (strcmp(status, "DeviceWipePending") == 0)
        return "The device will be wiped the next time it connects to the server.";
    if (strcmp(status, "DeviceWipeSucceeded") == 0)
        return "The device has been wiped.";
    return NULL;
}

/* Get-MobileDeviceStatistics / Get-ActiveSyncDeviceStatistics output (§7). */
static struct eg_ps_value *mk_stats(struct inv *iv, const struct mx_device *d,
                                    const struct stats_opts *so, int *rc)
{
    struct ob b;
    char ident[768], imei[32], phone[32], rp[16];
    bool online = iv->profile == MX_PROFILE_ONLINE;
    mx_device_identity(iv->org, d, ident, sizeof ident);
    mx_device_imei(d, imei, sizeof imei);
    mx_device_phone(d, phone, sizeof phone);
    if (iv->profile == MX_PROFILE_2010 || legacy_name(iv))
        ob_start(&b, TN_AS_STATS, NELEM(TN_AS_STATS), ident);
    else
        ob_start(&b, TN_MD_STATS, NELEM(TN_MD_STATS), ident);
    const char *status = mx_wipe_status(d);
    p_dt(&b, "FirstSyncTime", d->first_sync);
    p_dt(&b, "LastPolicyUpdateTime", d->last_policy);
    p_dt(&b, "LastSyncAttemptTime", d->last_attempt);
    p_dt(&b, "LastSuccessSync", online ? 0 : d->last_success);
    p_str(&b, "DeviceType", d->type);
    p_str(&b, "DeviceID", d->device_id);
    p_str(&b, "DeviceUserAgent", d->ua);
    p_dt(&b, "DeviceWipeSentTime", d->wipe_sent);
    p_dt(&b, "DeviceWipeRequestTime", d->wipe_request);
    p_dt(&b, "DeviceWipeAckTime", d->wipe_ack);
    p_str(&b, "LastDeviceWipeRequestor", d->requestor);
    p_i32(&b, "LastPingHeartbeat", 540);
    if (so && so->recovery_password) {
        snprintf(rp, sizeof rp, "%08u",
                 (unsigned)(d->guid[3] << 16 | d->guid[5] << 8 | d->guid[7]));
        p_str(&b, "RecoveryPassword", rp);
    } else {
        p_str(&b, "RecoveryPassword", "********");
    }
    p_str(&b, "DeviceModel", d->model);
    p_str(&b, "DeviceImei", imei);
    p_str(&b, "DeviceFriendlyName", d->friendly);
    p_str(&b, "DeviceOS", d->os);
    p_str(&b, "DeviceOSLanguage", d->os_lang);
    p_str(&b, "DevicePhoneNumber", phone);
    if (so && so->mailbox_log)
        p_str(&b, "MailboxLogReport", "Mailbox log for the device (simulated).");
    else
        p_nil(&b, "MailboxLogReport");
    p_bool(&b, "DeviceEnableOutboundSMS", false);
    p_str(&b, "DeviceMobileOperator", d->oper);
    p_str(&b, "Identity", ident);
    p_guid(&b, "Guid", d->guid);
    p_bool(&b, "IsRemoteWipeSupported", d->wipe_supported);
    p_str(&b, "Status", status);
    p_str(&b, "StatusNote", status_note(status));
    p_str(&b, "DeviceAccessState", mx_state_name(d->state));
    p_str(&b, "DeviceAccessStateReason", mx_reason_name(d->reason));
    p_str(&b, "DeviceAccessControlRule", d->rule);
    p_str(&b, "DevicePolicyApplied", iv->org->mbx[d->mailbox].policy);
    p_str(&b, "DevicePolicyApplicationStatus", "AppliedInFull");
    p_str(&b, "DeviceActiveSyncVersion", d->eas);
    p_i32(&b, "NumberOfFoldersSynced", 4);
    p_nil(&b, "SyncStateUpgradeTime");
    if (iv->profile != MX_PROFILE_2010) {
        p_str(&b, "ClientVersion", d->client_version);
        p_str(&b, "ClientType", d->client_type);
    }
    if (!online)
        p_bool(&b, "IsValid", true);
    p_str(&b, "ObjectState", "Unchanged");
    return ob_done(&b, rc);
}

static const char *ORGS_NAME = "Mobile Mailbox Settings";

static void orgs_dn(enum mx_profile p, char *buf, size_t size)
{
    snprintf(buf, size, "CN=%s,%s", ORGS_NAME, org_dn_suffix(p));
}

static struct eg_ps_value *mk_orgsettings(struct inv *iv, int *rc)
{
    struct mx_org *org = iv->org;
    struct ob b;
    char dn[512];
    orgs_dn(iv->profile, dn, sizeof dn);
    ob_start(&b, TN_ORGSETTINGS, NELEM(TN_ORGSETTINGS), ORGS_NAME);
    p_str(&b, "DefaultAccessLevel", mx_level_name(org->default_level));
    p_str(&b, "UserMailInsert", org->user_mail_insert);
    p_list(&b, "AdminMailRecipients", TN_MVP_SMTP, NELEM(TN_MVP_SMTP), org->admin_mail.v,
           org->admin_mail.n);
    p_str(&b, "OtaNotificationMailInsert", org->ota_insert);
    p_bool(&b, "AllowAccessForUnSupportedPlatform", org->allow_unsupported);
    if (iv->profile != MX_PROFILE_2010) {
        p_bool(&b, "AllowRMSSupportForUnenlightenedApps", org->allow_rms);
        p_bool(&b, "IsIntuneManaged", false);
        p_bool(&b, "HasAzurePremiumSubscription", false);
        p_nil(&b, "DeviceFiltering");
    }
    if (iv->profile == MX_PROFILE_ONLINE) {
        p_bool(&b, "EnableMobileMailboxPolicyWhenCAInplace", org->ca_policy);
        p_nil(&b, "TenantAdminPreference");
    }
    p_str(&b, "AdminDisplayName", "");
    char *classes[] = {"top", "msExchActiveSyncOrganizationSettings"};
    p_adobject(iv, &b, ORGS_NAME, ORGS_NAME, dn, org->org_guid,
               "ms-Exch-Active-Sync-Organization-Settings", classes, NELEM(classes),
               org->settings_changed - INT64_C(86400000) * 300, org->settings_changed,
               "0.10 (14.0.100.0)");
    return ob_done(&b, rc);
}

static void rule_dn(enum mx_profile p, const struct mx_rule *r, char *buf, size_t size)
{
    snprintf(buf, size, "CN=%s,CN=%s,%s", r->name, ORGS_NAME, org_dn_suffix(p));
}

static struct eg_ps_value *mk_rule(struct inv *iv, const struct mx_rule *r, int *rc)
{
    struct ob b;
    char dn[768];
    rule_dn(iv->profile, r, dn, sizeof dn);
    ob_start(&b, TN_RULE, NELEM(TN_RULE), r->name);
    p_str(&b, "QueryString", r->query);
    p_str(&b, "Characteristic", mx_charac_name(r->charac));
    p_str(&b, "AccessLevel", mx_level_name(r->level));
    p_str(&b, "AdminDisplayName", "");
    char *classes[] = {"top", "msExchDeviceAccessRule"};
    p_adobject(iv, &b, r->name, r->name, dn, r->guid, "ms-Exch-Device-Access-Rule", classes,
               NELEM(classes), r->created, r->changed, "0.10 (14.0.100.0)");
    return ob_done(&b, rc);
}

static const char *server_roles(enum mx_profile p)
{
    switch (p) {
    case MX_PROFILE_2010:
        return "Mailbox, ClientAccess, HubTransport";
    case MX_PROFILE_2013:
        return "Mailbox, ClientAccess";
    default:
        return "Mailbox";
    }
}

static struct eg_ps_value *mk_server(struct inv *iv, int *rc)
{
    struct ob b;
    uint8_t g[16];
    uint64_t st = UINT64_C(0x5345525645523031); /* "SERVER01" */
    mx_rand_guid(&st, g);
    char dn[512];
    snprintf(dn, sizeof dn,
             "CN=EXCH01,CN=Servers,CN=Exchange Administrative Group (FYDIBOHF23SPDLT),CN="
             "Administrative Groups,%s",
             org_dn_suffix(iv->profile));
    ob_start(&b, TN_SERVER, NELEM(TN_SERVER), "EXCH01");
    p_str(&b, "Name", "EXCH01");
    p_str(&b, "Domain", "contoso.example");
    p_str(&b, "Edition", "Enterprise");
    p_str(&b, "Fqdn", "exch01.contoso.example");
    p_str(&b, "ServerRole", server_roles(iv->profile));
    p_str(&b, "Site", "contoso.example/Configuration/Sites/Default-First-Site-Name");
    p_str(&b, "AdminDisplayVersion", iv->org->admin_version);
    p_bool(&b, "IsExchange2007OrLater", true);
    p_bool(&b, "IsE14OrLater", true);
    p_bool(&b, "IsE15OrLater", iv->profile != MX_PROFILE_2010);
    p_bool(&b, "IsMailboxServer", true);
    p_bool(&b, "IsClientAccessServer", iv->profile != MX_PROFILE_2016);
    char *classes[] = {"top", "server", "msExchExchangeServer"};
    p_adobject(iv, &b, "EXCH01", "EXCH01", dn, g, "ms-Exch-Exchange-Server", classes,
               NELEM(classes), INT64_C(1700000000000), INT64_C(1740000000000), "0.1 (8.0.535.0)");
    return ob_done(&b, rc);
}

static struct eg_ps_value *mk_orgconfig(struct inv *iv, int *rc)
{
    struct ob b;
    bool online = iv->profile == MX_PROFILE_ONLINE;
    const char *name = online ? "contoso.onmicrosoft.com" : "Contoso";
    ob_start(&b, TN_ORGCONFIG, NELEM(TN_ORGCONFIG), name);
    p_str(&b, "AdminDisplayVersion", iv->org->admin_version);
    p_bool(&b, "IsDehydrated", false);
    p_bool(&b, "ActivityBasedAuthenticationTimeoutEnabled", true);
    p_str(&b, "DisplayName", "Contoso");
    char *classes[] = {"top", "container", "msExchOrganizationContainer"};
    char dn[512];
    snprintf(dn, sizeof dn, "%s", org_dn_suffix(iv->profile));
    p_adobject(iv, &b, name, name, dn, iv->org->org_guid, "ms-Exch-Organization-Container", classes,
               NELEM(classes), INT64_C(1700000000000), INT64_C(1740000000000), NULL);
    return ob_done(&b, rc);
}

/* ================================================================ -Filter properties */

enum {
    DF_CLIENTTYPE,
    DF_RULE,
    DF_STATE,
    DF_REASON,
    DF_EASVER,
    DF_DEVICEID,
    DF_IMEI,
    DF_OPERATOR,
    DF_MODEL,
    DF_OS,
    DF_OSLANG,
    DF_PHONE,
    DF_TYPE,
    DF_UA,
    DF_FIRSTSYNC,
    DF_FRIENDLY,
    DF_PROVFLAGS,
    DF_USER,
    DF_WHENCHANGED,
    DF_WHENCREATED,
};

/* §6: the filterable properties of Get-MobileDevice; SortBy takes the same minus three. */
static const struct mx_filter_prop DEV_PROPS[] = {
    {"ClientType", DF_CLIENTTYPE, FV_STR},
    {"DeviceAccessControlRule", DF_RULE, FV_STR},
    {"DeviceAccessState", DF_STATE, FV_STR},
    {"DeviceAccessStateReason", DF_REASON, FV_STR},
    {"DeviceActiveSyncVersion", DF_EASVER, FV_STR},
    {"DeviceId", DF_DEVICEID, FV_STR},
    {"DeviceImei", DF_IMEI, FV_STR},
    {"DeviceMobileOperator", DF_OPERATOR, FV_STR},
    {"DeviceModel", DF_MODEL, FV_STR},
    {"DeviceOS", DF_OS, FV_STR},
    {"DeviceOSLanguage", DF_OSLANG, FV_STR},
    {"DeviceTelephoneNumber", DF_PHONE, FV_STR},
    {"DeviceType", DF_TYPE, FV_STR},
    {"DeviceUserAgent", DF_UA, FV_STR},
    {"FirstSyncTime", DF_FIRSTSYNC, FV_DATE},
    {"FriendlyName", DF_FRIENDLY, FV_STR},
    {"ProvisioningFlags", DF_PROVFLAGS, FV_INT},
    {"UserDisplayName", DF_USER, FV_STR},
    /* The ADObject times (not in the section 6 list; easgate's quick sync filters on
     * WhenChanged) [INF]. */
    {"WhenChanged", DF_WHENCHANGED, FV_DATE},
    {"WhenCreated", DF_WHENCREATED, FV_DATE},
};

struct dev_ctx {
    struct mx_org *org;
    const struct mx_device *d;
    char buf[64];
};

static void dev_get(void *vctx, int id, struct mx_fval *out)
{
    struct dev_ctx *c = vctx;
    const struct mx_device *d = c->d;
    out->kind = FV_STR;
    switch (id) {
    case DF_CLIENTTYPE:
        out->s = d->client_type;
        break;
    case DF_RULE:
        out->s = d->rule;
        if (!d->rule)
            out->kind = FV_NULL;
        break;
    case DF_STATE:
        out->s = mx_state_name(d->state);
        break;
    case DF_REASON:
        out->s = mx_reason_name(d->reason);
        break;
    case DF_EASVER:
        out->s = d->eas;
        break;
    case DF_DEVICEID:
        out->s = d->device_id;
        break;
    case DF_IMEI:
        mx_device_imei(d, c->buf, sizeof c->buf);
        out->s = c->buf;
        break;
    case DF_OPERATOR:
        out->s = d->oper;
        break;
    case DF_MODEL:
        out->s = d->model;
        break;
    case DF_OS:
        out->s = d->os;
        break;
    case DF_OSLANG:
        out->s = d->os_lang;
        break;
    case DF_PHONE:
        mx_device_phone(d, c->buf, sizeof c->buf);
        out->s = c->buf;
        break;
    case DF_TYPE:
        out->s = d->type;
        break;
    case DF_UA:
        out->s = d->ua;
        break;
    case DF_FIRSTSYNC:
        out->kind = d->first_sync ? FV_DATE : FV_NULL;
        out->i = d->first_sync;
        break;
    case DF_FRIENDLY:
        out->s = d->friendly;
        break;
    case DF_PROVFLAGS:
        out->kind = FV_INT;
        out->i = 0;
        break;
    case DF_USER:
        out->s = c->org->mbx[d->mailbox].canonical;
        break;
    case DF_WHENCHANGED:
        out->kind = FV_DATE;
        out->i = d->changed;
        break;
    case DF_WHENCREATED:
        out->kind = FV_DATE;
        out->i = d->created;
        break;
    default:
        out->kind = FV_NULL;
        break;
    }
    if (out->kind == FV_STR && !out->s)
        out->kind = FV_NULL;
}

enum {
    MF_ALLOWED,
    MF_BLOCKED,
    MF_ENABLED,
    MF_POLICY,
    MF_HASP,
    MF_DISPLAY,
    MF_NAME,
    MF_ALIAS,
    MF_SMTP,
    MF_SAM,
    MF_UPN,
    MF_GUID,
    MF_DEBUG,
    MF_SUPPRESS,
    MF_DN,
    MF_EMAILS,
    MF_WHENCREATED,
    MF_WHENCHANGED,
    MF_EXTID,
};

static const struct mx_filter_prop MBX_PROPS[] = {
    {"ActiveSyncAllowedDeviceIDs", MF_ALLOWED, FV_LIST},
    {"ActiveSyncBlockedDeviceIDs", MF_BLOCKED, FV_LIST},
    {"ActiveSyncEnabled", MF_ENABLED, FV_BOOL},
    {"ActiveSyncMailboxPolicy", MF_POLICY, FV_STR},
    {"HasActiveSyncDevicePartnership", MF_HASP, FV_BOOL},
    {"DisplayName", MF_DISPLAY, FV_STR},
    {"Name", MF_NAME, FV_STR},
    {"Alias", MF_ALIAS, FV_STR},
    {"PrimarySmtpAddress", MF_SMTP, FV_STR},
    {"SamAccountName", MF_SAM, FV_STR},
    {"UserPrincipalName", MF_UPN, FV_STR},
    {"Guid", MF_GUID, FV_STR},
    {"ActiveSyncDebugLogging", MF_DEBUG, FV_BOOL},
    {"ActiveSyncSuppressReadReceipt", MF_SUPPRESS, FV_BOOL},
    {"DistinguishedName", MF_DN, FV_STR},
    {"EmailAddresses", MF_EMAILS, FV_LIST},
    {"WhenCreated", MF_WHENCREATED, FV_DATE},
    {"WhenChanged", MF_WHENCHANGED, FV_DATE},
    {"ExternalDirectoryObjectId", MF_EXTID, FV_STR},
};

#define MBX_MAX_EMAILS 16

struct mbx_ctx {
    struct mx_org *org;
    const struct mx_mailbox *m;
    char buf[64];
    char emails[MBX_MAX_EMAILS][EG_MAX_MAILBOX_LEN + 8];
    char *eptr[MBX_MAX_EMAILS];
};

static void mbx_get(void *vctx, int id, struct mx_fval *out)
{
    struct mbx_ctx *c = vctx;
    const struct mx_mailbox *m = c->m;
    out->kind = FV_STR;
    switch (id) {
    case MF_ALLOWED:
    case MF_BLOCKED: {
        const struct mx_strv *sv = id == MF_ALLOWED ? &m->allowed : &m->blocked;
        out->kind = FV_LIST;
        out->list = sv->v;
        out->n = sv->n;
        break;
    }
    case MF_ENABLED:
        out->kind = FV_BOOL;
        out->b = m->as_enabled;
        break;
    case MF_POLICY:
        /* a defaulted mailbox has a blank policy in filters (§4.2) */
        out->s = m->policy_defaulted ? "" : m->policy;
        break;
    case MF_HASP:
        out->kind = FV_BOOL;
        out->b = mx_has_partnership(c->org, m);
        break;
    case MF_DISPLAY:
        out->s = m->display;
        break;
    case MF_NAME:
        out->s = m->name;
        break;
    case MF_ALIAS:
    case MF_SAM:
        out->s = m->alias;
        break;
    case MF_SMTP:
        out->s = m->smtp;
        break;
    case MF_UPN:
        out->s = m->upn;
        break;
    case MF_GUID:
        mx_guid_text(m->guid, c->buf);
        out->s = c->buf;
        break;
    case MF_DEBUG:
        out->kind = FV_BOOL;
        out->b = m->debug_logging;
        break;
    case MF_SUPPRESS:
        out->kind = FV_BOOL;
        out->b = m->suppress_rr;
        break;
    case MF_DN:
        out->s = m->dn;
        break;
    case MF_EMAILS: {
        size_t n = 0;
        snprintf(c->emails[n], sizeof c->emails[n], "SMTP:%s", m->smtp);
        c->eptr[n] = c->emails[n];
        n++;
        for (uint32_t i = 0; i < m->n_proxies && n < MBX_MAX_EMAILS; i++, n++) {
            snprintf(c->emails[n], sizeof c->emails[n], "smtp:%s", m->proxies[i]);
            c->eptr[n] = c->emails[n];
        }
        out->kind = FV_LIST;
        out->list = c->eptr;
        out->n = n;
        break;
    }
    case MF_WHENCREATED:
        out->kind = FV_DATE;
        out->i = m->when_created;
        break;
    case MF_WHENCHANGED:
        out->kind = FV_DATE;
        out->i = m->when_changed;
        break;
    case MF_EXTID:
        if (c->org->profile == MX_PROFILE_ONLINE) {
            mx_guid_text(m->ext_id, c->buf);
            out->s = c->buf;
        } else {
            out->s = "";
        }
        break;
    default:
        out->kind = FV_NULL;
        break;
    }
}

/* Parse -Filter for the properties; on failure term is filled (binding error). */
static int parse_filter(struct inv *iv, const struct mx_filter_prop *props, size_t n,
                        struct mx_filter **ret)
{
    const struct bval *f = arg(iv, "Filter");
    *ret = NULL;
    if (!f->set || f->null)
        return 0;
    char err[768];
    int rc = mx_filter_parse(f->s, props, n, ret, err, sizeof err);
    if (rc == EG_ENOMEM)
        return rc;
    if (rc != 0)
        return filter_error(iv, "Filter", err);
    return 0;
}

/* -SortBy: the property id (props minus the unsortable ones), or -1 with term filled. */
static int parse_sort(struct inv *iv, const struct mx_filter_prop *props, size_t n,
                      const char *const *unsortable, int *ret)
{
    const struct bval *s = arg(iv, "SortBy");
    *ret = -1;
    if (!s->set || s->null)
        return 0;
    for (size_t i = 0; i < n; i++) {
        if (strcasecmp(props[i].name, s->s) != 0)
            continue;
        for (size_t k = 0; unsortable && unsortable[k]; k++)
            if (strcasecmp(unsortable[k], s->s) == 0)
                goto bad;
        *ret = props[i].id;
        return 0;
    }
bad:;
    char msg[400];
    snprintf(msg, sizeof msg, "\"%s\" is not a sortable property.", s->s);
    return filter_error(iv, "SortBy", msg);
}

static int fval_cmp(const struct mx_fval *a, const struct mx_fval *b)
{
    bool an = a->kind == FV_NULL || (a->kind == FV_LIST && a->n == 0);
    bool bn = b->kind == FV_NULL || (b->kind == FV_LIST && b->n == 0);
    if (an || bn)
        return an == bn ? 0 : an ? -1 : 1;
    switch (a->kind) {
    case FV_STR:
        return strcasecmp(a->s, b->s);
    case FV_LIST:
        return strcasecmp(a->list[0], b->list[0]);
    case FV_BOOL:
        return (int)a->b - (int)b->b;
    default:
        return a->i < b->i ? -1 : a->i > b->i;
    }
}

struct sort_ctx {
    struct mx_org *org;
    int prop;
    bool devices;
    struct mbx_ctx *mc; /* two getter contexts (mailboxes) */
};

static int sort_cmp(const void *pa, const void *pb, void *vctx)
{
    const struct sort_ctx *s = vctx;
    uint32_t ia = *(const uint32_t *)pa, ib = *(const uint32_t *)pb;
    struct mx_fval a, b;
    memset(&a, 0, sizeof a);
    memset(&b, 0, sizeof b);
    int c;
    if (s->devices) {
        struct dev_ctx ca = {.org = s->org, .d = &s->org->dev[ia]};
        struct dev_ctx cb = {.org = s->org, .d = &s->org->dev[ib]};
        dev_get(&ca, s->prop, &a);
        dev_get(&cb, s->prop, &b);
        c = fval_cmp(&a, &b);
    } else {
        s->mc[0].org = s->mc[1].org = s->org;
        s->mc[0].m = &s->org->mbx[ia];
        s->mc[1].m = &s->org->mbx[ib];
        mbx_get(&s->mc[0], s->prop, &a);
        mbx_get(&s->mc[1], s->prop, &b);
        c = fval_cmp(&a, &b);
    }
    return c ? c : (ia > ib) - (ia < ib);
}

/* ================================================================ streaming Get */

/* The candidates of a Get: a list of mailbox or device indexes, or every index (scan). Indexes
 * stay valid while the lock is dropped (slots never move, removed devices are tombstones). */
struct cand {
    uint32_t *v;
    size_t n, cap, pos;
    bool scan;
};

static int cand_add(struct cand *c, uint32_t x)
{
    if (c->n == c->cap) {
        size_t nc = c->cap ? c->cap * 2 : 16;
        uint32_t *nv = eg_reallocarray(c->v, nc, sizeof *nv);
        if (!nv)
            return EG_ENOMEM;
        c->v = nv;
        c->cap = nc;
    }
    c->v[c->n++] = x;
    return 0;
}

enum { CT_EAS = 1, CT_MOWA = 2, CT_OUTLOOK = 4, CT_UNIVERSAL = 8 };

static unsigned client_mask(const char *ct)
{
    if (!ct)
        return 0;
    if (strcasecmp(ct, "EAS") == 0)
        return CT_EAS;
    if (strcasecmp(ct, "MOWA") == 0 || strcasecmp(ct, "OWAforDevices") == 0)
        return CT_MOWA;
    if (strcasecmp(ct, "Outlook") == 0)
        return CT_OUTLOOK;
    if (strcasecmp(ct, "UniversalOutlook") == 0)
        return CT_UNIVERSAL;
    return 0;
}

/* What a Get selects, for mailboxes or devices. */
struct sel {
    bool devices;
    /* mailboxes */
    const char *pattern; /* wildcard Identity */
    const char *anr;
    struct mbx_ctx *mc;
    bool show_debug, recalc;
    const char *const *props; /* property selection (Get-EXOCasMailbox), NULL = all */
    size_t n_props;
    /* devices */
    unsigned ctypes; /* client-type switches (0 = every type) */
    bool stats;      /* build statistics objects */
    struct stats_opts so;
    struct mx_filter *flt;
};

static bool prefix_ci(const char *s, const char *p)
{
    return s && strncasecmp(s, p, strlen(p)) == 0;
}

static bool match(struct inv *iv, struct sel *s, uint32_t i)
{
    struct mx_org *org = iv->org;
    if (s->devices) {
        if (i >= org->n_dev)
            return false;
        const struct mx_device *d = &org->dev[i];
        if (d->removed)
            return false;
        if (s->ctypes && !(client_mask(d->client_type) & s->ctypes))
            return false;
        if (s->flt) {
            struct dev_ctx c = {.org = org, .d = d};
            return mx_filter_eval(s->flt, dev_get, &c);
        }
        return true;
    }
    if (i >= org->n_mbx)
        return false;
    const struct mx_mailbox *m = &org->mbx[i];
    if (s->pattern && !mx_mailbox_wild(m, s->pattern))
        return false;
    if (s->anr && !prefix_ci(m->name, s->anr) && !prefix_ci(m->alias, s->anr) &&
        !prefix_ci(m->display, s->anr) && !prefix_ci(m->smtp, s->anr))
        return false;
    if (s->flt) {
        s->mc->org = org;
        s->mc->m = m;
        return mx_filter_eval(s->flt, mbx_get, s->mc);
    }
    return true;
}

static struct eg_ps_value *build(struct inv *iv, struct sel *s, uint32_t i, int *rc)
{
    struct mx_org *org = iv->org;
    if (s->devices)
        return s->stats ? mk_stats(iv, &org->dev[i], &s->so, rc) : mk_device(iv, &org->dev[i], rc);
    struct mx_mailbox *m = &org->mbx[i];
    if (s->recalc)
        m->has_partnership = m->n_live > 0;
    return mk_casmailbox(iv, m, s->show_debug, s->props, s->n_props, rc);
}

/* Sort every match by property prop (lock held): the candidates become the sorted list. */
static int sort_cands(struct inv *iv, struct sel *s, struct cand *c, int prop)
{
    struct cand sorted = {0};
    size_t total = s->devices ? iv->org->n_dev : iv->org->n_mbx;
    for (size_t k = 0; c->scan ? k < total : k < c->n; k++) {
        uint32_t i = c->scan ? (uint32_t)k : c->v[k];
        if (match(iv, s, i) && cand_add(&sorted, i) != 0) {
            eg_free(sorted.v);
            return EG_ENOMEM;
        }
    }
    struct mbx_ctx *mc = NULL;
    if (!s->devices && !(mc = eg_malloc(2 * sizeof *mc))) {
        eg_free(sorted.v);
        return EG_ENOMEM;
    }
    struct sort_ctx sc = {.org = iv->org, .prop = prop, .devices = s->devices, .mc = mc};
    if (sorted.n > 1)
        qsort_r(sorted.v, sorted.n, sizeof *sorted.v, sort_cmp, &sc);
    eg_free(mc);
    eg_free(c->v);
    *c = sorted;
    return 0;
}

/* Emit the matches one by one: each object is built under the lock and handed over without it.
 * limit < 0 = Unlimited; when more matches exist past the limit the §2 warning follows. */
static int stream(struct inv *iv, struct sel *s, struct cand *c, int64_t limit)
{
    struct mx_org *org = iv->org;
    int64_t emitted = 0;
    bool more = false;
    int rc = 0;
    for (;;) {
        pthread_mutex_lock(&org->lock);
        size_t total = s->devices ? org->n_dev : org->n_mbx;
        bool found = false;
        uint32_t i = 0;
        while (!found) {
            if (c->scan) {
                if (c->pos >= total)
                    break;
                i = (uint32_t)c->pos++;
            } else {
                if (c->pos >= c->n)
                    break;
                i = c->v[c->pos++];
            }
            found = match(iv, s, i);
        }
        if (!found) {
            pthread_mutex_unlock(&org->lock);
            break;
        }
        if (limit >= 0 && emitted >= limit) {
            more = true;
            pthread_mutex_unlock(&org->lock);
            break;
        }
        int brc = 0;
        struct eg_ps_value *o = build(iv, s, i, &brc);
        pthread_mutex_unlock(&org->lock);
        if (!o)
            return brc ? brc : EG_ENOMEM;
        if ((rc = emit_object(iv, o)) != 0)
            return rc;
        emitted++;
    }
    if (more)
        rc = emit_warning(iv, TRUNCATION_WARNING);
    return rc;
}

static int64_t result_limit(const struct inv *iv)
{
    const struct bval *rs = arg(iv, "ResultSize");
    return rs->set ? rs->n : RESULT_SIZE_DEFAULT;
}

/* ================================================================ Get-CASMailbox */

static int run_get_cas(struct inv *iv)
{
    struct mx_org *org = iv->org;
    const struct bval *id = arg(iv, "Identity"), *anr = arg(iv, "Anr");
    struct sel s = {.devices = false};
    struct cand c = {0};
    struct mx_error e;
    bool have_err = false;
    int sortp = -1, rc;

    if (id->set && !id->null && anr->set && !anr->null)
        return ambiguous_set(iv);
    if ((rc = parse_filter(iv, MBX_PROPS, NELEM(MBX_PROPS), &s.flt)) != 0)
        goto out;
    if ((rc = parse_sort(iv, MBX_PROPS, NELEM(MBX_PROPS), NULL, &sortp)) != 0)
        goto out;
    if (!(s.mc = eg_malloc(sizeof *s.mc))) {
        rc = EG_ENOMEM;
        goto out;
    }
    s.show_debug = arg(iv, "ActiveSyncDebugLogging")->b;
    s.recalc = arg(iv, "RecalculateHasActiveSyncDevicePartnership")->b;
    s.anr = anr->set && !anr->null ? anr->s : NULL;
    pthread_mutex_lock(&org->lock);
    if (id->set && !id->null && strpbrk(id->s, "*?")) {
        s.pattern = id->s;
        c.scan = true;
    } else if (id->set && !id->null) {
        uint32_t mi;
        int frc = mx_find_mailbox(org, id->s, &mi);
        if (frc != 0) {
            err_lookup(iv, &e, frc, id->s);
            have_err = true;
        } else {
            rc = cand_add(&c, mi);
        }
    } else {
        c.scan = true;
    }
    if (rc == 0 && !have_err && sortp >= 0)
        rc = sort_cands(iv, &s, &c, sortp);
    pthread_mutex_unlock(&org->lock);
    if (rc != 0)
        goto out;
    if (have_err) {
        rc = emit_error(iv, &e);
        goto out;
    }
    rc = stream(iv, &s, &c, result_limit(iv));
out:
    mx_filter_free(s.flt);
    eg_free(s.mc);
    eg_free(c.v);
    return rc;
}

/* ================================================================ Get-MobileDevice */

static void deprecation_warning(struct inv *iv, char *buf, size_t size)
{
    snprintf(buf, size,
             "The %s cmdlet will be removed in a future version of Exchange. Use the %s cmdlet "
             "instead. If you have any scripts that use the %s cmdlet, update them to use the %s "
             "cmdlet. For more information, see http://go.microsoft.com/fwlink/p/?LinkId=254711.",
             iv->cmd->name, iv->cmd->successor, iv->cmd->name, iv->cmd->successor);
}

static unsigned client_switches(const struct inv *iv)
{
    unsigned m = 0;
    if (arg(iv, "ActiveSync")->b)
        m |= CT_EAS;
    if (arg(iv, "OWAforDevices")->b)
        m |= CT_MOWA;
    if (arg(iv, "RestApi")->b)
        m |= CT_OUTLOOK;
    if (arg(iv, "UniversalOutlook")->b)
        m |= CT_UNIVERSAL;
    /* the deprecated *-ActiveSyncDevice* names of 2013+ see EAS partnerships only */
    if (legacy_name(iv) && iv->profile != MX_PROFILE_2010)
        m = CT_EAS;
    return m;
}

/* The devices of mailbox mi (lock held). */
static int mailbox_cands(struct mx_org *org, uint32_t mi, struct cand *c)
{
    for (uint32_t x = org->mbx[mi].dev_head; x != MX_NONE; x = org->dev[x].next)
        if (cand_add(c, x) != 0)
            return EG_ENOMEM;
    return 0;
}

static const char *const DEV_UNSORTABLE[] = {"ClientType", "DeviceActiveSyncVersion",
                                             "ProvisioningFlags", NULL};

static int run_get_device(struct inv *iv)
{
    struct mx_org *org = iv->org;
    const struct bval *id = arg(iv, "Identity"), *mb = arg(iv, "Mailbox");
    struct sel s = {.devices = true};
    struct cand c = {0};
    struct mx_error e;
    bool have_err = false;
    int sortp = -1, rc;

    if (mb->set && id->set && !id->null)
        return ambiguous_set(iv);
    if (mb->set && mb->null)
        return bind_null_not_allowed(iv, &P_GET_MD[1]);
    if ((rc = parse_filter(iv, DEV_PROPS, NELEM(DEV_PROPS), &s.flt)) != 0)
        goto out;
    if ((rc = parse_sort(iv, DEV_PROPS, NELEM(DEV_PROPS), DEV_UNSORTABLE, &sortp)) != 0)
        goto out;
    s.ctypes = client_switches(iv);
    pthread_mutex_lock(&org->lock);
    uint32_t x;
    int frc = 0;
    if (mb->set) {
        if ((frc = mx_find_mailbox(org, mb->s, &x)) == 0)
            rc = mailbox_cands(org, x, &c);
        else
            err_lookup(iv, &e, frc, mb->s);
    } else if (id->set && !id->null) {
        if ((frc = mx_find_device(org, id->s, &x)) == 0)
            rc = cand_add(&c, x);
        else
            err_lookup(iv, &e, frc, id->s);
    } else {
        c.scan = true;
    }
    have_err = frc != 0;
    if (rc == 0 && !have_err && sortp >= 0)
        rc = sort_cands(iv, &s, &c, sortp);
    pthread_mutex_unlock(&org->lock);
    if (rc != 0)
        goto out;
    if (have_err) {
        rc = emit_error(iv, &e);
        goto out;
    }
    rc = stream(iv, &s, &c, result_limit(iv));
out:
    mx_filter_free(s.flt);
    eg_free(c.v);
    return rc;
}

/* ================================================================ Get-MobileDeviceStatistics */

static int run_get_stats(struct inv *iv)
{
    struct mx_org *org = iv->org;
    const struct bval *id = arg(iv, "Identity"), *mb = arg(iv, "Mailbox");
    struct sel s = {.devices = true, .stats = true};
    struct cand c = {0};
    struct mx_error e;
    int rc = 0, frc = 0;

    if (mb->set && id->set)
        return ambiguous_set(iv);
    if (!mb->set && !id->set)
        return err_ps(iv, X_BIND, "MissingMandatoryParameter", EG_PS_ERR_INVALID_ARGUMENT,
                      "Cannot process command because of one or more missing mandatory "
                      "parameters: Identity.");
    if ((mb->set && mb->null) || (id->set && id->null))
        return bind_null_not_allowed(iv, mb->set ? &P_GET_MDS[1] : &P_GET_MDS[0]);
    s.ctypes = client_switches(iv);
    s.so.mailbox_log = arg(iv, "GetMailboxLog")->b;
    s.so.recovery_password = arg(iv, "ShowRecoveryPassword")->b;
    pthread_mutex_lock(&org->lock);
    uint32_t x;
    if (mb->set) {
        if ((frc = mx_find_mailbox(org, mb->s, &x)) == 0)
            rc = mailbox_cands(org, x, &c);
        else
            err_lookup(iv, &e, frc, mb->s);
    } else {
        if ((frc = mx_find_device(org, id->s, &x)) == 0)
            rc = cand_add(&c, x);
        else
            err_lookup(iv, &e, frc, id->s);
        s.ctypes = 0; /* an explicit identity is returned whatever its type */
    }
    pthread_mutex_unlock(&org->lock);
    if (rc == 0 && frc != 0)
        rc = emit_error(iv, &e);
    else if (rc == 0)
        rc = stream(iv, &s, &c, -1);
    eg_free(c.v);
    return rc;
}

/* ================================================================ MultiValuedProperty writes */

/* The new content of a list after write e (§4.1): replace, @{Remove} then @{Add}, or clear.
 * Values match case-insensitively and are stored as given. Returns 0 (*out filled), EG_ECONFLICT
 * (strict mode: *dup names the duplicate value), EG_ENOMEM. */
static int mvp_apply(const struct mvp *e, const struct mx_strv *cur, bool strict,
                     struct mx_strv *out, const char **dup)
{
    int rc = 0;
    memset(out, 0, sizeof *out);
    if (e->clear)
        return 0;
    if (e->edit)
        for (size_t i = 0; i < cur->n && rc == 0; i++)
            rc = mx_strv_add(out, cur->v[i]);
    for (size_t i = 0; e->edit && i < e->n_rem && rc == 0; i++) {
        long k = mx_strv_find(out, e->rem[i]);
        if (k >= 0)
            mx_strv_remove_at(out, (size_t)k); /* absent: a silent no-op */
    }
    char **items = e->edit ? e->add : e->repl;
    size_t n = e->edit ? e->n_add : e->n_repl;
    for (size_t i = 0; i < n && rc == 0; i++) {
        if (!*items[i])
            continue;
        if (mx_strv_find(out, items[i]) >= 0) {
            if (strict) {
                *dup = items[i];
                rc = EG_ECONFLICT;
            }
            continue;
        }
        rc = mx_strv_add(out, items[i]);
    }
    if (rc != 0)
        mx_strv_clear(out);
    return rc;
}

static bool strv_equal(const struct mx_strv *a, const struct mx_strv *b)
{
    if (a->n != b->n)
        return false;
    for (size_t i = 0; i < a->n; i++)
        if (strcmp(a->v[i], b->v[i]) != 0)
            return false;
    return true;
}

/* Replace *dst by src (taken over); true when the content changed. */
static bool strv_take(struct mx_strv *dst, struct mx_strv *src)
{
    bool changed = !strv_equal(dst, src);
    mx_strv_clear(dst);
    *dst = *src;
    memset(src, 0, sizeof *src);
    return changed;
}

/* Compute a list write into *out; on a task error fills e and returns EG_ECONFLICT. */
static int list_write(struct inv *iv, const struct bval *b, const struct mx_strv *cur,
                      struct mx_strv *out, struct mx_error *e)
{
    const char *dup = NULL;
    int rc = mvp_apply(&b->mvp, cur, iv->org->beh.strict_duplicates, out, &dup);
    if (rc == EG_ECONFLICT) {
        err_duplicate(iv, e, dup);
        return rc;
    }
    if (rc != 0)
        return rc;
    if (iv->org->beh.list_cap && out->n > iv->org->beh.list_cap) {
        mx_strv_clear(out);
        err_list_cap(iv, e);
        return EG_ECONFLICT;
    }
    return 0;
}

static void confirm_query(char *buf, size_t size, const char *action, const char *target)
{
    snprintf(buf, size, "Are you sure you want to perform this action?\r\n%s \"%s\".", action,
             target);
}

/* ================================================================ Set-CASMailbox */

static int run_set_cas(struct inv *iv)
{
    struct mx_org *org = iv->org;
    const struct bval *id = arg(iv, "Identity");
    const struct bval *al = arg(iv, "ActiveSyncAllowedDeviceIDs");
    const struct bval *bl = arg(iv, "ActiveSyncBlockedDeviceIDs");
    const struct bval *pol = arg(iv, "ActiveSyncMailboxPolicy");
    struct mx_strv nal = {0}, nbl = {0};
    struct mx_error e;
    char warn[EG_MAX_MAILBOX_LEN + 1200] = "", query[1200];
    bool have_err = false, prompt = false;
    int rc = 0;
    uint32_t mi;

    pthread_mutex_lock(&org->lock);
    int frc = mx_find_mailbox(org, id->s, &mi);
    if (frc != 0) {
        err_lookup(iv, &e, frc, id->s);
        have_err = true;
        goto unlock;
    }
    struct mx_mailbox *m = &org->mbx[mi];
    if (m->write_scope_fault) {
        err_write_scope(iv, &e, m->identity);
        have_err = true;
        goto unlock;
    }
    const char *policy = NULL;
    if (pol->set && !pol->null) {
        long k = mx_strv_find(&org->policies, pol->s);
        if (k < 0) {
            err_not_found(iv, &e, pol->s);
            have_err = true;
            goto unlock;
        }
        if (!(policy = mx_intern(org, org->policies.v[k]))) {
            rc = EG_ENOMEM;
            goto unlock;
        }
    }
    if (al->set && (rc = list_write(iv, al, &m->allowed, &nal, &e)) != 0)
        goto list_err;
    if (bl->set && (rc = list_write(iv, bl, &m->blocked, &nbl, &e)) != 0)
        goto list_err;
    if (needs_prompt(iv)) {
        confirm_query(query, sizeof query, "Setting CAS mailbox", m->identity);
        prompt = true;
        goto unlock;
    }
    if (iv->whatif)
        goto unlock;
    bool changed = false;
    if (al->set)
        changed |= strv_take(&m->allowed, &nal);
    if (bl->set)
        changed |= strv_take(&m->blocked, &nbl);
    const struct bval *b;
    if ((b = arg(iv, "ActiveSyncEnabled"))->set) {
        changed |= m->as_enabled != b->b;
        m->as_enabled = b->b;
    }
    if ((b = arg(iv, "ActiveSyncDebugLogging"))->set) {
        changed |= m->debug_logging != b->b;
        m->debug_logging = b->b;
    }
    if ((b = arg(iv, "ActiveSyncSuppressReadReceipt"))->set) {
        changed |= m->suppress_rr != b->b;
        m->suppress_rr = b->b;
    }
    if ((b = arg(iv, "HasActiveSyncDevicePartnership"))->set) {
        changed |= m->has_partnership != b->b;
        m->has_partnership = b->b;
    }
    if (pol->set) {
        /* $null resets to the default policy and marks it defaulted; "Default" does not */
        const char *np = pol->null ? mx_intern(org, "Default") : policy;
        if (!np) {
            rc = EG_ENOMEM;
            goto unlock;
        }
        bool nd = pol->null;
        changed |= m->policy != np || m->policy_defaulted != nd;
        m->policy = np;
        m->policy_defaulted = nd;
    }
    if (changed) {
        m->when_changed = mx_now(org);
        if (org->beh.recompute_on_set)
            mx_recompute_mailbox(org, mi);
    } else if (org->beh.noop_warning) {
        snprintf(warn, sizeof warn,
                 "The command completed successfully but no settings of '%s' have been modified.",
                 m->identity);
    }
    goto unlock;
list_err:
    if (rc == EG_ECONFLICT) {
        have_err = true;
        rc = 0;
    }
unlock:
    pthread_mutex_unlock(&org->lock);
    mx_strv_clear(&nal);
    mx_strv_clear(&nbl);
    if (rc != 0)
        return rc;
    if (prompt)
        return prompt_failure(iv, query);
    if (have_err)
        return emit_error(iv, &e);
    if (*warn)
        return emit_warning(iv, warn);
    return 0;
}

/* ================================================================ Clear- / Remove-MobileDevice */

static bool eas_at_least(const char *v, int major, int minor)
{
    int64_t ma = 0, mi = 0;
    char buf[16];
    snprintf(buf, sizeof buf, "%s", v ? v : "");
    char *dot = strchr(buf, '.');
    if (dot)
        *dot = '\0';
    if (eg_parse_int64(buf, 0, 1000, &ma) != 0)
        return false;
    if (dot && eg_parse_int64(dot + 1, 0, 1000, &mi) != 0)
        return false;
    return ma > major || (ma == major && mi >= minor);
}

/* Find the device of -Identity and check the owner's write scope (lock held). 0 (*ret), or
 * EG_ECONFLICT with e filled. */
static int device_for_write(struct inv *iv, const char *id, uint32_t *ret, struct mx_error *e)
{
    uint32_t di;
    int frc = mx_find_device(iv->org, id, &di);
    if (frc != 0) {
        err_lookup(iv, e, frc, id);
        return EG_ECONFLICT;
    }
    const struct mx_mailbox *m = &iv->org->mbx[iv->org->dev[di].mailbox];
    if (m->write_scope_fault) {
        err_write_scope(iv, e, m->identity);
        return EG_ECONFLICT;
    }
    *ret = di;
    return 0;
}

static int run_clear_device(struct inv *iv)
{
    struct mx_org *org = iv->org;
    const struct bval *id = arg(iv, "Identity"), *notify = arg(iv, "NotificationEmailAddresses");
    bool cancel = arg(iv, "Cancel")->b, account_only = arg(iv, "AccountOnly")->b;
    struct mx_error e;
    struct mx_strv nn = {0};
    char ident[768];
    bool have_err = false, prompt = false;
    int rc = 0;
    uint32_t di;

    pthread_mutex_lock(&org->lock);
    if (device_for_write(iv, id->s, &di, &e) != 0) {
        have_err = true;
        goto unlock;
    }
    struct mx_device *d = &org->dev[di];
    mx_device_identity(org, d, ident, sizeof ident);
    if (!cancel && account_only && !eas_at_least(d->eas, 16, 1)) {
        err_task(iv, &e, X_INVOP, EG_PS_ERR_INVALID_OPERATION, NULL, 0,
                 "The device '%s' doesn't support account-only remote wipe. Account-only remote "
                 "wipe requires Exchange ActiveSync version 16.1 or later.",
                 ident);
        have_err = true;
        goto unlock;
    }
    if (notify->set && !cancel) {
        struct mx_strv empty = {0};
        const struct mx_strv *cur = d->notify ? d->notify : &empty;
        if ((rc = list_write(iv, notify, cur, &nn, &e)) != 0) {
            have_err = rc == EG_ECONFLICT;
            rc = have_err ? 0 : rc;
            goto unlock;
        }
    }
    if (needs_prompt(iv)) {
        prompt = true;
        goto unlock;
    }
    if (iv->whatif)
        goto unlock;
    int64_t now = mx_now(org);
    if (cancel) {
        /* only in state B (requested, not yet delivered) does a cancel take effect (§8.1) */
        if (d->wipe_request && !d->wipe_sent && !d->wipe_ack) {
            d->wipe_request = 0;
            d->requestor = NULL;
            d->account_only = false;
            if (d->notify) {
                mx_strv_clear(d->notify);
                eg_freep(&d->notify);
            }
            d->changed = now;
        }
        goto unlock;
    }
    const char *req = mx_intern(org, org->beh.requestor);
    if (!req) {
        rc = EG_ENOMEM;
        goto unlock;
    }
    if (notify->set) {
        if (!d->notify && !(d->notify = eg_calloc(1, sizeof *d->notify))) {
            rc = EG_ENOMEM;
            goto unlock;
        }
        strv_take(d->notify, &nn);
    }
    if (d->wipe_ack) { /* a new wipe after a successful one starts over */
        d->wipe_ack = 0;
        d->wipe_sent = 0;
    }
    d->wipe_request = now;
    d->requestor = req;
    d->account_only = account_only;
    d->changed = now;
unlock:
    pthread_mutex_unlock(&org->lock);
    mx_strv_clear(&nn);
    if (rc != 0)
        return rc;
    if (have_err)
        return emit_error(iv, &e);
    if (prompt)
        return prompt_failure(iv, CONFIRM_WIPE);
    return 0;
}

static int run_remove_device(struct inv *iv)
{
    struct mx_org *org = iv->org;
    const struct bval *id = arg(iv, "Identity");
    struct mx_error e;
    char query[1200];
    bool have_err = false, prompt = false;
    uint32_t di;

    pthread_mutex_lock(&org->lock);
    if (device_for_write(iv, id->s, &di, &e) != 0) {
        have_err = true;
    } else if (needs_prompt(iv)) {
        char ident[768];
        mx_device_identity(org, &org->dev[di], ident, sizeof ident);
        confirm_query(query, sizeof query, "Removing mobile device", ident);
        prompt = true;
    } else if (!iv->whatif) {
        mx_device_remove(org, di);
    }
    pthread_mutex_unlock(&org->lock);
    if (have_err)
        return emit_error(iv, &e);
    if (prompt)
        return prompt_failure(iv, query);
    return 0;
}

/* ================================================================ org settings */

/* -Identity of the settings object: its name, Guid or DN. */
static bool orgs_identity_ok(struct inv *iv, const char *id)
{
    char g[40], dn[512];
    mx_guid_text(iv->org->org_guid, g);
    orgs_dn(iv->profile, dn, sizeof dn);
    return strcasecmp(id, ORGS_NAME) == 0 || strcasecmp(id, g) == 0 || strcasecmp(id, dn) == 0;
}

static int run_get_orgs(struct inv *iv)
{
    const struct bval *id = arg(iv, "Identity");
    struct mx_error e;
    int rc = 0;
    pthread_mutex_lock(&iv->org->lock);
    if (id->set && !id->null && !orgs_identity_ok(iv, id->s)) {
        err_not_found(iv, &e, id->s);
        pthread_mutex_unlock(&iv->org->lock);
        return emit_error(iv, &e);
    }
    struct eg_ps_value *o = mk_orgsettings(iv, &rc);
    pthread_mutex_unlock(&iv->org->lock);
    return o ? emit_object(iv, o) : rc;
}

static int mail_insert_check(struct inv *iv, const char *name)
{
    const struct bval *b = arg(iv, name);
    if (!b->set || b->null || strlen(b->s) <= MAIL_INSERT_MAX)
        return 0;
    return err_ps(iv, X_VALIDATE, "ParameterArgumentValidationError", EG_PS_ERR_INVALID_DATA,
                  "Cannot validate argument on parameter '%s'. The character length of the %zu "
                  "argument is too long. Shorten the character length of the argument so it is "
                  "fewer than or equal to \"%d\" characters, and then try the command again.",
                  name, strlen(b->s), MAIL_INSERT_MAX);
}

static int set_optional_string(char **field, const struct bval *b)
{
    if (!b->set)
        return 0;
    char *n = NULL;
    if (!b->null && !(n = eg_strdup(b->s)))
        return EG_ENOMEM;
    eg_free(*field);
    *field = n;
    return 0;
}

static int run_set_orgs(struct inv *iv)
{
    struct mx_org *org = iv->org;
    const struct bval *id = arg(iv, "Identity"), *lvl = arg(iv, "DefaultAccessLevel");
    const struct bval *adm = arg(iv, "AdminMailRecipients");
    struct mx_strv na = {0};
    struct mx_error e;
    char query[600];
    bool have_err = false, prompt = false;
    int rc;

    if ((rc = mail_insert_check(iv, "UserMailInsert")) != 0 ||
        (rc = mail_insert_check(iv, "OtaNotificationMailInsert")) != 0)
        return rc;
    pthread_mutex_lock(&org->lock);
    if (id->set && !id->null && !orgs_identity_ok(iv, id->s)) {
        err_not_found(iv, &e, id->s);
        have_err = true;
        goto unlock;
    }
    if (adm->set && (rc = list_write(iv, adm, &org->admin_mail, &na, &e)) != 0) {
        have_err = rc == EG_ECONFLICT;
        rc = have_err ? 0 : rc;
        goto unlock;
    }
    if (needs_prompt(iv)) {
        confirm_query(query, sizeof query, "Setting ActiveSync organization settings", ORGS_NAME);
        prompt = true;
        goto unlock;
    }
    if (iv->whatif)
        goto unlock;
    if ((rc = set_optional_string(&org->user_mail_insert, arg(iv, "UserMailInsert"))) != 0 ||
        (rc = set_optional_string(&org->ota_insert, arg(iv, "OtaNotificationMailInsert"))) != 0)
        goto unlock;
    if (adm->set)
        strv_take(&org->admin_mail, &na);
    const struct bval *b;
    if ((b = arg(iv, "AllowAccessForUnSupportedPlatform"))->set)
        org->allow_unsupported = b->b;
    if ((b = arg(iv, "AllowRMSSupportForUnenlightenedApps"))->set)
        org->allow_rms = b->b;
    if ((b = arg(iv, "EnableMobileMailboxPolicyWhenCAInplace"))->set)
        org->ca_policy = b->b;
    if (lvl->set && org->default_level != (unsigned)lvl->n) {
        org->default_level = (unsigned)lvl->n;
        if (org->beh.recompute_on_set)
            mx_recompute_all(org);
    }
    org->settings_changed = mx_now(org);
unlock:
    pthread_mutex_unlock(&org->lock);
    mx_strv_clear(&na);
    if (rc != 0)
        return rc;
    if (have_err)
        return emit_error(iv, &e);
    if (prompt)
        return prompt_failure(iv, query);
    return 0;
}

/* ================================================================ device access rules */

/* The rule with that Name, Guid or DN (lock held), or -1. */
static long find_rule(struct inv *iv, const char *id)
{
    uint8_t g[16];
    bool is_guid = mx_guid_parse(id, g);
    char dn[768];
    for (size_t i = 0; i < iv->org->n_rules; i++) {
        const struct mx_rule *r = &iv->org->rules[i];
        if (strcasecmp(r->name, id) == 0 || (is_guid && memcmp(g, r->guid, 16) == 0))
            return (long)i;
        rule_dn(iv->profile, r, dn, sizeof dn);
        if (strcasecmp(dn, id) == 0)
            return (long)i;
    }
    return -1;
}

static int run_get_rule(struct inv *iv)
{
    struct mx_org *org = iv->org;
    const struct bval *id = arg(iv, "Identity");
    struct mx_error e;
    int rc = 0;
    size_t pos = 0;
    if (id->set && !id->null) {
        pthread_mutex_lock(&org->lock);
        long k = find_rule(iv, id->s);
        struct eg_ps_value *o = NULL;
        if (k < 0)
            err_not_found(iv, &e, id->s);
        else
            o = mk_rule(iv, &org->rules[k], &rc);
        pthread_mutex_unlock(&org->lock);
        if (k < 0)
            return emit_error(iv, &e);
        return o ? emit_object(iv, o) : rc;
    }
    for (;;) {
        pthread_mutex_lock(&org->lock);
        if (pos >= org->n_rules) {
            pthread_mutex_unlock(&org->lock);
            return 0;
        }
        struct eg_ps_value *o = mk_rule(iv, &org->rules[pos++], &rc);
        pthread_mutex_unlock(&org->lock);
        if (!o)
            return rc;
        if ((rc = emit_object(iv, o)) != 0)
            return rc;
    }
}

static void rule_changed(struct mx_org *org)
{
    if (org->beh.recompute_on_set)
        mx_recompute_all(org);
}

static int run_new_rule(struct inv *iv)
{
    struct mx_org *org = iv->org;
    const char *qs = arg(iv, "QueryString")->s;
    unsigned ch = (unsigned)arg(iv, "Characteristic")->n;
    unsigned lv = (unsigned)arg(iv, "AccessLevel")->n;
    struct mx_error e;
    char name[600], query[1200];
    bool have_err = false, prompt = false;
    int rc = 0;
    struct eg_ps_value *o = NULL;

    if (!qs)
        return bind_null_not_allowed(iv, &P_NEW_RULE[0]);
    if (strlen(qs) > EG_MAX_STRING_FIELD)
        return err_ps(iv, X_VALIDATE, "ParameterArgumentValidationError", EG_PS_ERR_INVALID_DATA,
                      "Cannot validate argument on parameter 'QueryString'. The character length "
                      "of the %zu argument is too long. Shorten the character length of the "
                      "argument so it is fewer than or equal to \"%d\" characters, and then try "
                      "the command again.",
                      strlen(qs), EG_MAX_STRING_FIELD);
    snprintf(name, sizeof name, "%s (%s)", qs, mx_charac_name(ch));
    pthread_mutex_lock(&org->lock);
    for (size_t i = 0; i < org->n_rules; i++) {
        const struct mx_rule *r = &org->rules[i];
        if (r->charac == ch && strcasecmp(r->query, qs) == 0) {
            char dn[768];
            rule_dn(iv->profile, r, dn, sizeof dn);
            err_task(iv, &e, X_EXISTS, EG_PS_ERR_NOT_SPECIFIED, NULL, 0,
                     "Active Directory operation failed on %s. The object '%s' already exists.",
                     dc_fqdn(iv->profile), dn);
            have_err = true;
            goto unlock;
        }
    }
    if (needs_prompt(iv)) {
        confirm_query(query, sizeof query, "Creating ActiveSync device access rule", name);
        prompt = true;
        goto unlock;
    }
    if (iv->whatif)
        goto unlock;
    if (org->n_rules == org->cap_rules) {
        size_t nc = org->cap_rules ? org->cap_rules * 2 : 8;
        struct mx_rule *nv = eg_reallocarray(org->rules, nc, sizeof *nv);
        if (!nv) {
            rc = EG_ENOMEM;
            goto unlock;
        }
        org->rules = nv;
        org->cap_rules = nc;
    }
    struct mx_rule *r = &org->rules[org->n_rules];
    memset(r, 0, sizeof *r);
    r->name = eg_strdup(name);
    r->query = eg_strdup(qs);
    if (!r->name || !r->query) {
        eg_free(r->name);
        eg_free(r->query);
        rc = EG_ENOMEM;
        goto unlock;
    }
    r->charac = (uint8_t)ch;
    r->level = (uint8_t)lv;
    mx_rand_guid(&org->rng, r->guid);
    r->created = r->changed = mx_now(org);
    org->n_rules++;
    rule_changed(org);
    o = mk_rule(iv, r, &rc);
unlock:
    pthread_mutex_unlock(&org->lock);
    if (have_err)
        return emit_error(iv, &e);
    if (prompt)
        return prompt_failure(iv, query);
    if (rc != 0)
        return rc;
    return o ? emit_object(iv, o) : 0;
}

static int run_set_rule(struct inv *iv)
{
    struct mx_org *org = iv->org;
    const struct bval *id = arg(iv, "Identity"), *lvl = arg(iv, "AccessLevel");
    struct mx_error e;
    char query[1200];
    bool have_err = false, prompt = false;
    pthread_mutex_lock(&org->lock);
    long k = find_rule(iv, id->s);
    if (k < 0) {
        err_not_found(iv, &e, id->s);
        have_err = true;
    } else if (needs_prompt(iv)) {
        confirm_query(query, sizeof query, "Setting ActiveSync device access rule",
                      org->rules[k].name);
        prompt = true;
    } else if (!iv->whatif && lvl->set && org->rules[k].level != (uint8_t)lvl->n) {
        org->rules[k].level = (uint8_t)lvl->n;
        org->rules[k].changed = mx_now(org);
        rule_changed(org);
    }
    pthread_mutex_unlock(&org->lock);
    if (have_err)
        return emit_error(iv, &e);
    if (prompt)
        return prompt_failure(iv, query);
    return 0;
}

static int run_remove_rule(struct inv *iv)
{
    struct mx_org *org = iv->org;
    const struct bval *id = arg(iv, "Identity");
    struct mx_error e;
    char query[1200];
    bool have_err = false, prompt = false;
    pthread_mutex_lock(&org->lock);
    long k = find_rule(iv, id->s);
    if (k < 0) {
        err_not_found(iv, &e, id->s);
        have_err = true;
    } else if (needs_prompt(iv)) {
        confirm_query(query, sizeof query, "Removing ActiveSync device access rule",
                      org->rules[k].name);
        prompt = true;
    } else if (!iv->whatif) {
        eg_free(org->rules[k].name);
        eg_free(org->rules[k].query);
        memmove(&org->rules[k], &org->rules[k + 1],
                (org->n_rules - (size_t)k - 1) * sizeof *org->rules);
        org->n_rules--;
        rule_changed(org);
    }
    pthread_mutex_unlock(&org->lock);
    if (have_err)
        return emit_error(iv, &e);
    if (prompt)
        return prompt_failure(iv, query);
    return 0;
}

/* ================================================================ version probes */

static int run_get_server(struct inv *iv)
{
    const struct bval *id = arg(iv, "Identity");
    struct mx_error e;
    int rc = 0;
    if (id->set && !id->null && !mx_wildcard(id->s, "EXCH01") &&
        !mx_wildcard(id->s, "exch01.contoso.example")) {
        pthread_mutex_lock(&iv->org->lock);
        err_not_found(iv, &e, id->s);
        pthread_mutex_unlock(&iv->org->lock);
        return emit_error(iv, &e);
    }
    pthread_mutex_lock(&iv->org->lock);
    struct eg_ps_value *o = mk_server(iv, &rc);
    pthread_mutex_unlock(&iv->org->lock);
    return o ? emit_object(iv, o) : rc;
}

static int run_get_orgconfig(struct inv *iv)
{
    int rc = 0;
    pthread_mutex_lock(&iv->org->lock);
    struct eg_ps_value *o = mk_orgconfig(iv, &rc);
    pthread_mutex_unlock(&iv->org->lock);
    return o ? emit_object(iv, o) : rc;
}

/* ================================================================ Get-Command */

static bool cmdlet_visible(struct inv *iv, const struct cdef *c)
{
    return pf_has(iv, c->profiles) && !mx_rbac_cmdlet_hidden(iv->org, c->name);
}

static struct eg_ps_value *mk_parameter_meta(const struct pdef *d)
{
    struct ob b;
    ob_start(&b, TN_PARAMMETA, NELEM(TN_PARAMMETA),
             "System.Management.Automation.ParameterMetadata");
    p_str(&b, "Name", d->name);
    p_str(&b, "ParameterType", d->type);
    p_bool(&b, "IsDynamic", false);
    p_bool(&b, "SwitchParameter", d->kind == PK_SWITCH);
    int rc;
    return ob_done(&b, &rc);
}

/* A CmdletInfo with the parameters this caller can see (lock held: RBAC). */
static struct eg_ps_value *mk_cmdletinfo(struct inv *iv, const struct cdef *c, int *rc)
{
    struct inv sub = *iv;
    sub.cmd = c;
    visible_params(&sub);
    struct ob b;
    char verb[64], noun[96];
    const char *dash = strchr(c->name, '-');
    snprintf(verb, sizeof verb, "%.*s", (int)(dash - c->name), c->name);
    snprintf(noun, sizeof noun, "%s", dash + 1);
    ob_start(&b, TN_CMDLETINFO, NELEM(TN_CMDLETINFO), c->name);
    p_str(&b, "Verb", verb);
    p_str(&b, "Noun", noun);
    p_str(&b, "HelpFile", "");
    p_str(&b, "ImplementingType", c->klass);
    p_str(&b, "DefaultParameterSet", "Identity");
    p_str(&b, "Name", c->name);
    p_str(&b, "CommandType", "Cmdlet");
    p_str(&b, "Source", "");
    p_str(&b, "Visibility", "Public");
    p_str(&b, "ModuleName", "");
    p_nil(&b, "Module");
    p_str(&b, "RemotingCapability", "PowerShell");
    struct eg_ps_value *dict = eg_ps_new_obj();
    int drc = dict ? eg_ps_obj_set_types(dict, TN_DICT, NELEM(TN_DICT)) : EG_ENOMEM;
    if (drc == 0)
        drc = eg_ps_obj_set_container(dict, EG_PS_CT_DCT);
    for (size_t i = 0; drc == 0 && i < sub.n_vis; i++)
        drc = eg_ps_obj_add_entry(dict, eg_ps_new_string(sub.vis[i]->name),
                                  mk_parameter_meta(sub.vis[i]));
    if (drc != 0) {
        eg_ps_value_free(dict);
        dict = NULL;
        if (!b.rc)
            b.rc = drc;
    }
    ob_add(&b, "Parameters", dict);
    return ob_done(&b, rc);
}

static int run_get_command(struct inv *iv)
{
    const struct bval *nm = arg(iv, "Name");
    size_t np = nm->set && !nm->null ? nm->n_strs : 0;
    bool *hit = NULL;
    int rc = 0;
    if (np && !(hit = eg_calloc(np, sizeof *hit)))
        return EG_ENOMEM;
    for (size_t i = 0; i < NELEM(CMDLETS) && rc == 0; i++) {
        const struct cdef *c = &CMDLETS[i];
        pthread_mutex_lock(&iv->org->lock);
        bool vis = cmdlet_visible(iv, c), want = np == 0;
        for (size_t k = 0; vis && k < np; k++)
            if (mx_wildcard(nm->strs[k], c->name)) {
                want = true;
                hit[k] = true;
            }
        struct eg_ps_value *o = vis && want ? mk_cmdletinfo(iv, c, &rc) : NULL;
        pthread_mutex_unlock(&iv->org->lock);
        if (o)
            rc = emit_object(iv, o);
    }
    for (size_t k = 0; k < np && rc == 0; k++) {
        if (hit[k] || strpbrk(nm->strs[k], "*?"))
            continue;
        struct mx_error e;
        struct mx_error *save = iv->term;
        iv->term = &e;
        err_ps(iv, X_NOCMD, "CommandNotFoundException", EG_PS_ERR_OBJECT_NOT_FOUND,
               "The term '%s' is not recognized as the name of a cmdlet, function, script file, "
               "or operable program. Check the spelling of the name, or if a path was included, "
               "verify that the path is correct and try again.",
               nm->strs[k]);
        iv->term = save;
        snprintf(e.target, sizeof e.target, "%s", nm->strs[k]);
        snprintf(e.target_type, sizeof e.target_type, "String");
        category_line(&e);
        rc = emit_error(iv, &e);
    }
    eg_free(hit);
    return rc;
}

/* ================================================================ Get-EXO* (Exchange Online V3) */

static const char *const PS_MINIMUM[] = {"ActiveSyncEnabled",
                                         "EwsEnabled",
                                         "ECPEnabled",
                                         "ExternalDirectoryObjectId",
                                         "Guid",
                                         "Identity",
                                         "ImapEnabled",
                                         "MAPIEnabled",
                                         "Name",
                                         "OrganizationId",
                                         "OWAEnabled",
                                         "OWAforDevicesEnabled",
                                         "PopEnabled",
                                         "PrimarySmtpAddress",
                                         "DisplayName",
                                         NULL};
static const char *const PS_ACTIVESYNC[] = {"ActiveSyncAllowedDeviceIDs",
                                            "ActiveSyncBlockedDeviceIDs",
                                            "ActiveSyncEnabled",
                                            "ActiveSyncMailboxPolicy",
                                            "ActiveSyncMailboxPolicyIsDefaulted",
                                            "ActiveSyncSuppressReadReceipt",
                                            "ExternalDirectoryObjectId",
                                            "Guid",
                                            "HasActiveSyncDevicePartnership",
                                            "Identity",
                                            "Name",
                                            "OrganizationId",
                                            NULL};
static const char *const PS_EWS[] = {"EwsEnabled", "Guid", "Identity", "Name", NULL};
static const char *const PS_IMAP[] = {"ImapEnabled", "Guid", "Identity", "Name", NULL};
static const char *const PS_MAPI[] = {"MAPIEnabled", "Guid", "Identity", "Name", NULL};
static const char *const PS_POP[] = {"PopEnabled", "Guid", "Identity", "Name", NULL};
static const char *const PS_PROTOCOL[] = {
    "ActiveSyncEnabled", "EwsEnabled", "ImapEnabled", "MAPIEnabled", "OWAEnabled", "PopEnabled",
    "ECPEnabled",        "Guid",       "Identity",    "Name",        NULL};

static const struct {
    const char *name;
    const char *const *props; /* NULL: All */
} PROPERTY_SETS[] = {{"Minimum", PS_MINIMUM},
                     {"ActiveSync", PS_ACTIVESYNC},
                     {"Ews", PS_EWS},
                     {"Imap", PS_IMAP},
                     {"Mapi", PS_MAPI},
                     {"Pop", PS_POP},
                     {"ProtocolSettings", PS_PROTOCOL},
                     {"All", NULL}};

/* The property selection of -PropertySets (default Minimum) and -Properties; *ret NULL = all. */
static int exo_selection(struct inv *iv, const char ***ret, size_t *ret_n)
{
    const struct bval *sets = arg(iv, "PropertySets"), *props = arg(iv, "Properties");
    const char **sel = NULL;
    size_t n = 0, cap = 0;
    bool all = false;
    *ret = NULL;
    *ret_n = 0;
    size_t ns = sets->set && !sets->null ? sets->n_strs : 0;
    for (size_t k = 0; k <= ns; k++) {
        const char *want = k < ns ? sets->strs[k] : (ns ? NULL : "Minimum");
        if (!want)
            continue;
        size_t j;
        for (j = 0; j < NELEM(PROPERTY_SETS); j++)
            if (strcasecmp(PROPERTY_SETS[j].name, want) == 0)
                break;
        if (j == NELEM(PROPERTY_SETS)) {
            eg_free(sel);
            return err_ps(iv, X_VALIDATE, "ParameterArgumentValidationError",
                          EG_PS_ERR_INVALID_DATA,
                          "Cannot validate argument on parameter 'PropertySets'. The argument "
                          "\"%s\" does not belong to the set \"Minimum,ActiveSync,Ews,Imap,Mapi,"
                          "Pop,ProtocolSettings,All\" specified by the ValidateSet attribute.",
                          want);
        }
        if (!PROPERTY_SETS[j].props) {
            all = true;
            continue;
        }
        for (const char *const *p = PROPERTY_SETS[j].props; *p; p++) {
            if (n == cap) {
                size_t nc = cap ? cap * 2 : 32;
                const char **nv = eg_reallocarray(sel, nc, sizeof *nv);
                if (!nv) {
                    eg_free(sel);
                    return EG_ENOMEM;
                }
                sel = nv;
                cap = nc;
            }
            sel[n++] = *p;
        }
    }
    for (size_t k = 0; props->set && !props->null && k < props->n_strs; k++) {
        if (n == cap) {
            size_t nc = cap ? cap * 2 : 32;
            const char **nv = eg_reallocarray(sel, nc, sizeof *nv);
            if (!nv) {
                eg_free(sel);
                return EG_ENOMEM;
            }
            sel = nv;
            cap = nc;
        }
        sel[n++] = props->strs[k];
    }
    if (all) {
        eg_free(sel);
        return 0;
    }
    *ret = sel;
    *ret_n = n;
    return 0;
}

/* The one mailbox identity of a Get-EXO* call (-Identity, -ExternalDirectoryObjectId,
 * -PrimarySmtpAddress, -UserPrincipalName, or -Mailbox), NULL if none; EG_EREMOTE when several. */
static int exo_identity(struct inv *iv, const char *const *names, size_t n, const char **ret)
{
    *ret = NULL;
    for (size_t i = 0; i < n; i++) {
        const struct bval *b = arg(iv, names[i]);
        if (!b->set || b->null)
            continue;
        if (*ret)
            return ambiguous_set(iv);
        *ret = b->s;
    }
    return 0;
}

static int run_get_exocas(struct inv *iv)
{
    static const char *const ids[] = {"Identity", "ExternalDirectoryObjectId", "PrimarySmtpAddress",
                                      "UserPrincipalName"};
    struct mx_org *org = iv->org;
    const struct bval *anr = arg(iv, "Anr");
    struct sel s = {.devices = false};
    struct cand c = {0};
    struct mx_error e;
    const char **props = NULL;
    const char *id = NULL;
    bool have_err = false;
    int rc;

    if ((rc = exo_identity(iv, ids, NELEM(ids), &id)) != 0)
        return rc;
    if (id && anr->set && !anr->null)
        return ambiguous_set(iv);
    if ((rc = exo_selection(iv, &props, &s.n_props)) != 0)
        return rc;
    s.props = props;
    if ((rc = parse_filter(iv, MBX_PROPS, NELEM(MBX_PROPS), &s.flt)) != 0)
        goto out;
    if (!(s.mc = eg_malloc(sizeof *s.mc))) {
        rc = EG_ENOMEM;
        goto out;
    }
    s.anr = anr->set && !anr->null ? anr->s : NULL;
    pthread_mutex_lock(&org->lock);
    if (id) {
        uint32_t mi;
        int frc = mx_find_mailbox(org, id, &mi);
        if (frc != 0) {
            err_lookup(iv, &e, frc, id);
            have_err = true;
        } else {
            rc = cand_add(&c, mi);
        }
    } else {
        c.scan = true;
    }
    pthread_mutex_unlock(&org->lock);
    if (rc != 0)
        goto out;
    if (have_err) {
        rc = emit_error(iv, &e);
        goto out;
    }
    rc = stream(iv, &s, &c, result_limit(iv));
out:
    mx_filter_free(s.flt);
    eg_free(s.mc);
    eg_free(c.v);
    eg_free(props);
    return rc;
}

static int run_get_exostats(struct inv *iv)
{
    static const char *const mids[] = {"Mailbox", "ExternalDirectoryObjectId", "PrimarySmtpAddress",
                                       "UserPrincipalName"};
    struct mx_org *org = iv->org;
    const struct bval *id = arg(iv, "Identity");
    struct sel s = {.devices = true, .stats = true};
    struct cand c = {0};
    struct mx_error e;
    const char *mb = NULL;
    bool have_err = false;
    int rc;

    if ((rc = exo_identity(iv, mids, NELEM(mids), &mb)) != 0)
        return rc;
    bool has_id = id->set && !id->null;
    if (mb && has_id)
        return ambiguous_set(iv);
    if (!mb && !has_id)
        return err_ps(iv, X_BIND, "MissingMandatoryParameter", EG_PS_ERR_INVALID_ARGUMENT,
                      "Cannot process command because of one or more missing mandatory "
                      "parameters: Identity.");
    s.ctypes = client_switches(iv);
    pthread_mutex_lock(&org->lock);
    if (mb) {
        uint32_t mi;
        int frc = mx_find_mailbox(org, mb, &mi);
        if (frc != 0) {
            err_lookup(iv, &e, frc, mb);
            have_err = true;
        } else {
            rc = mailbox_cands(org, mi, &c);
        }
    } else {
        /* a Guid, or a DeviceId (unique across the org) */
        uint32_t di, found = MX_NONE;
        size_t hits = 0;
        if (mx_find_device(org, id->s, &di) == 0) {
            found = di;
            hits = 1;
        } else {
            for (size_t i = 0; i < org->n_dev; i++)
                if (!org->dev[i].removed && strcasecmp(org->dev[i].device_id, id->s) == 0) {
                    found = (uint32_t)i;
                    hits++;
                }
        }
        if (hits == 0) {
            err_task(iv, &e, X_NOTFOUND, EG_PS_ERR_NOT_SPECIFIED, "NotFound", 404,
                     "The mobile device cannot be found.");
            have_err = true;
        } else if (hits > 1) {
            err_ambiguous(iv, &e, id->s);
            have_err = true;
        } else {
            rc = cand_add(&c, found);
            s.ctypes = 0;
        }
    }
    pthread_mutex_unlock(&org->lock);
    if (rc == 0 && have_err)
        rc = emit_error(iv, &e);
    else if (rc == 0)
        rc = stream(iv, &s, &c, -1);
    eg_free(c.v);
    return rc;
}

/* ================================================================ mx_invoke */

void mx_error_scripts_not_allowed(struct mx_error *e)
{
    if (!e)
        return;
    memset(e, 0, sizeof *e);
    snprintf(e->exception_type, sizeof e->exception_type, "%s", X_PARSE);
    snprintf(e->message, sizeof e->message,
             "The syntax is not supported by this runspace. This can occur if the runspace is in "
             "no-language mode.");
    snprintf(e->fqeid, sizeof e->fqeid, "ScriptsNotAllowed");
    e->category = EG_PS_ERR_PARSER_ERROR;
    snprintf(e->category_reason, sizeof e->category_reason, "ParseException");
    snprintf(e->rest_code, sizeof e->rest_code, "BadRequest");
    e->http_status = 400;
    category_line(e);
}

static void command_not_found(struct inv *iv, const char *name)
{
    err_ps(iv, X_NOCMD, "CommandNotFoundException", EG_PS_ERR_OBJECT_NOT_FOUND,
           "The term '%s' is not recognized as the name of a cmdlet, function, script file, or "
           "operable program. Check the spelling of the name, or if a path was included, verify "
           "that the path is correct and try again.",
           name);
    snprintf(iv->term->target, sizeof iv->term->target, "%s", name);
    snprintf(iv->term->target_type, sizeof iv->term->target_type, "String");
    category_line(iv->term);
}

/* The call record of §"call recorder" in engine.h; NULL on ENOMEM. */
static json_t *make_record(const struct inv *iv, const char *cmdlet, const struct mx_param *params,
                           size_t n, int rc)
{
    json_t *rec = json_object(), *ps = json_object(), *pos = NULL;
    if (!rec || !ps)
        goto fail;
    json_t *cj = json_string(cmdlet); /* NULL for invalid UTF-8 */
    if (json_object_set_new(rec, "seq", json_integer(0)) ||
        json_object_set_new(rec, "cmdlet", cj ? cj : json_string("?")))
        goto fail;
    for (size_t i = 0; i < n; i++) {
        json_t *v = NULL;
        if (!params[i].value)
            v = json_true();
        else if (eg_clixml_to_json(params[i].value, &v) != 0)
            v = json_null();
        if (!v)
            goto fail;
        if (params[i].name) {
            /* jansson drops v when the name is not valid UTF-8 */
            if (json_object_set_new(ps, params[i].name, v) != 0)
                json_object_set_new(ps, "?", json_null());
        } else {
            if (!pos && !(pos = json_array())) {
                json_decref(v);
                goto fail;
            }
            json_array_append_new(pos, v);
        }
    }
    json_object_set_new(rec, "parameters", ps);
    ps = NULL;
    if (pos) {
        json_object_set_new(rec, "positional", pos);
        pos = NULL;
    }
    const char *status = rc == 0                             ? "Completed"
                         : iv->cb_rc != 0 && rc == iv->cb_rc ? "Stopped"
                                                             : "Failed";
    json_object_set_new(rec, "status", json_string(status));
    json_object_set_new(rec, "errors", iv->errors ? json_incref(iv->errors) : json_array());
    if (rc == EG_EREMOTE)
        json_object_set_new(rec, "error",
                            json_pack("{s:s,s:s,s:s}", "exception_type", iv->term->exception_type,
                                      "message", iv->term->message, "fqeid", iv->term->fqeid));
    return rec;
fail:
    json_decref(rec);
    json_decref(ps);
    json_decref(pos);
    return NULL;
}

int mx_invoke(struct mx_org *org, const char *cmdlet, const struct mx_param *params, size_t n,
              const struct mx_output_ops *out, void *ctx, struct mx_error *term)
{
    if (!org || !cmdlet || !term || (n && !params))
        return EG_EINVAL;
    struct inv *iv = eg_calloc(1, sizeof *iv);
    if (!iv)
        return EG_ENOMEM;
    char *warn = NULL;
    int rc;
    memset(term, 0, sizeof *term);
    iv->org = org;
    iv->profile = org->profile;
    iv->out = out;
    iv->ctx = ctx;
    iv->term = term;
    iv->erraction = iv->warnaction = -1;
    if (!(iv->errors = json_array())) {
        rc = EG_ENOMEM;
        goto record;
    }
    /* injected faults: latency, quota errors, micro-delays */
    rc = mx_fault_before(org, cmdlet, term, &warn);
    if (rc == 0 && warn)
        rc = emit_warning(iv, warn);
    eg_freep(&warn);
    if (rc != 0)
        goto record;
    /* resolve and bind under the lock (RBAC state) */
    pthread_mutex_lock(&org->lock);
    const struct cdef *c = cmdlet_by_name(cmdlet);
    if (!c || !pf_has(iv, c->profiles) || mx_rbac_cmdlet_hidden(org, c->name)) {
        command_not_found(iv, cmdlet);
        rc = EG_EREMOTE;
    } else {
        iv->cmd = c;
        iv->task_terminating = org->beh.task_errors_terminating;
        rc = bind(iv, params, n);
    }
    pthread_mutex_unlock(&org->lock);
    if (rc != 0)
        goto record;
    if (legacy_name(iv) && iv->profile != MX_PROFILE_2010) {
        char dw[700];
        deprecation_warning(iv, dw, sizeof dw);
        if ((rc = emit_warning(iv, dw)) != 0)
            goto record;
    }
    rc = iv->cmd->run(iv);
record:;
    json_t *rec = make_record(iv, cmdlet, params, n, rc);
    if (rec)
        mx_recorder_add(org, rec);
    inv_release(iv);
    eg_free(iv);
    return rc;
}
