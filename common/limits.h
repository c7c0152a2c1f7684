/* limits.h - every compiled-in limit of easgate, in one place.
 *
 * Over a limit, input is rejected (HTTP 413/431/400, EG_ELIMIT), never truncated. Limits that an
 * operator may tune have a config option whose default and bounds come from here.
 */
#ifndef EG_LIMITS_H
#define EG_LIMITS_H

/* ---- console API (transport/server, agent/api) ---- */
#define EG_MAX_HEADER_BYTES        (8 * 1024)    /* sum of request line + header fields -> 431 */
#define EG_MHD_CONN_MEMORY         (64 * 1024)   /* libmicrohttpd per-connection pool */
#define EG_DEFAULT_MAX_BODY        (1024 * 1024) /* request body -> 413 */
#define EG_MIN_MAX_BODY            (4 * 1024)
#define EG_MAX_MAX_BODY            (64 * 1024 * 1024)
#define EG_DEFAULT_MAX_CONNECTIONS 256
#define EG_MAX_MAX_CONNECTIONS     10000
#define EG_DEFAULT_CONN_TIMEOUT_S  30 /* idle connection cut-off */
#define EG_MAX_QUERY_ARGS          16
#define EG_MAX_TOKEN_BYTES         4096 /* bearer token file */
#define EG_MIN_TOKEN_BYTES         16
/* A 20 KB header block still fits EG_MHD_CONN_MEMORY, so the server answers 431 problem+json
 * itself; a header block larger than the pool is refused by libmicrohttpd (plain 431 HTML). */
#define EG_DEFAULT_SERVER_THREADS 4 /* libmicrohttpd polling threads */
#define EG_MAX_SERVER_THREADS     64
#define EG_MAX_TLS_FILE_BYTES     (1024 * 1024) /* certificate, key or client CA PEM file */
#define EG_MAX_TLS_CHAIN          16            /* certificates in the server's cert_file */
#define EG_MAX_CLIENT_CHAIN       8             /* certificates checked from a client */
#define EG_MAX_BODY_DISCARD                                                                        \
    (4 * 1024 * 1024) /* body bytes past max_body still read (and dropped)                         \
                         so that the client sees the 413; beyond this                              \
                         the connection is closed */
#define EG_TLS_RETIRE_GRACE_MS                                                                     \
    1000                        /* after a TLS reload the old listener is stopped                  \
                                   once idle, but not sooner than this... */
#define EG_TLS_RETIRE_MAX_S 120 /* ...and not later than this (connections cut) */
/* Per-client protection (transport/server): a token bucket per client identity (certificate
 * fingerprint, else peer IP) -> 429; connections per peer IP address. */
#define EG_DEFAULT_API_RATE            200    /* requests per second per client (0 = off) */
#define EG_MAX_API_RATE                100000 /* api_rate upper bound */
#define EG_DEFAULT_API_BURST           400    /* bucket size: requests at once */
#define EG_MAX_API_BURST               1000000
#define EG_MAX_RATE_CLIENTS            4096 /* client buckets kept; least recently seen evicted */
#define EG_DEFAULT_MAX_CONN_PER_CLIENT 32   /* open connections of one peer IP address */
/* Requests still arriving after conn_timeout_s are looked for (and cut) this often. */
#define EG_SLOW_REQUEST_CHECK_MS 250

/* ---- commands (agent/command) ---- */
#define EG_MAX_BATCH         1000 /* commands in one POST */
#define EG_DEFAULT_MAX_BATCH 1000
#define EG_MAX_JSON_DEPTH    8   /* nesting of a command body */
#define EG_MAX_ID_LEN        128 /* console command id */
#define EG_MAX_MAILBOX_LEN   256 /* SMTP address / UPN (RFC 5321: 254) */
#define EG_MAX_LOCALPART_LEN 64
#define EG_MAX_DOMAIN_LEN    253
#define EG_MAX_LABEL_LEN     63
#define EG_MAX_DEVICE_ID_LEN 64   /* ActiveSync DeviceId */
#define EG_MAX_DEVICE_SET    2000 /* entries in one declared allowed/blocked set */
#define EG_MAX_NOTIFY        10   /* wipe notification addresses */
#define EG_MAX_POLICY_LEN    256  /* ActiveSync mailbox policy name */
#define EG_MAX_STRING_FIELD  1024 /* any other string field */

/* ---- listing (agent/api) ---- */
#define EG_DEFAULT_PAGE_SIZE 100
#define EG_MAX_PAGE_SIZE     1000

/* ---- workers (agent/worker) ---- */
#define EG_DEFAULT_WORKERS      4
#define EG_MAX_WORKERS          64
#define EG_MAX_COALESCE         500 /* commands merged into one bridge call */
#define EG_DEFAULT_MAX_ATTEMPTS 8

/* ---- config (agent/config) ---- */
#define EG_MAX_CONFIG_BYTES         (256 * 1024)
#define EG_MAX_PATH_LEN             4096
#define EG_MAX_CONFIG_ERRORS        100
#define EG_MAX_CONN_TIMEOUT_S       3600 /* conn_timeout_s upper bound */
#define EG_DEFAULT_DRAIN_TIMEOUT_MS 10000
#define EG_MAX_DRAIN_TIMEOUT_MS     (10 * 60 * 1000)
#define EG_MAX_DRYRUN_LATENCY_MS    60000
#define EG_MAX_MAX_ATTEMPTS         100
#define EG_DEFAULT_RETRY_BASE_MS    500
#define EG_DEFAULT_RETRY_MAX_MS     60000
#define EG_MAX_RETRY_MS             (60 * 60 * 1000) /* retry_base_ms / retry_max_ms upper bound */
/* retry_deadline_ms: a transient failure is final once the next attempt would start later than
 * this after the command was accepted (upper bound: EG_MAX_RETRY_DEADLINE_MS, 7 days, below). */
#define EG_DEFAULT_RETRY_DEADLINE_MS (15 * 60 * 1000)
#define EG_MIN_RETRY_DEADLINE_MS     1000

/* ---- systemd notifications (agent/notify) ---- */
#define EG_MAX_NOTIFY_STATUS_BYTES 512 /* one STATUS= text */

/* ---- audit trail (agent/audit) ---- */
#define EG_MAX_AUDIT_LINE (4 * 1024 * 1024) /* one audit record (line); larger -> EG_ELIMIT */

/* ---- journal (agent/queue) ---- */
#define EG_QUEUE_BUSY_TIMEOUT_MS 5000 /* SQLite busy_timeout: wait for a lock this long */
/* Claim order across mailboxes (agent/queue.c fair_rank): a mailbox quiet for this long counts
 * as fresh, and no command is overtaken by commands accepted more than this after it. */
#define EG_QUEUE_FAIR_WINDOW_MS 10000
#define EG_QUEUE_FAIR_LANES     16384 /* per-mailbox acceptance times kept (a hash table) */

/* ---- upload outbox and uploader (agent/outbox, agent/uploader) ---- */
#define EG_OUTBOX_MAX_RECORDS         1000000 /* waiting records (outbox_max_records) */
#define EG_OUTBOX_MIN_MAX_RECORDS     10      /* outbox_max_records lower bound */
#define EG_OUTBOX_MAX_BYTES           (512LL * 1024 * 1024) /* payload bytes (outbox_max_bytes) */
#define EG_OUTBOX_MIN_MAX_BYTES       (64 * 1024)           /* outbox_max_bytes lower bound */
#define EG_OUTBOX_WARN_FRACTION       0.8               /* warning above this share of a bound */
#define EG_OUTBOX_BATCH_RECORDS       1000              /* records in one upload batch */
#define EG_OUTBOX_BATCH_BYTES         (4 * 1024 * 1024) /* payload bytes of a batch (>= 1 record) */
#define EG_OUTBOX_MAX_RECORD_BYTES    (4 * 1024 * 1024) /* one record's payload -> EG_ELIMIT */
#define EG_OUTBOX_MAX_KIND_LEN        64                /* record kind ("device.added") */
#define EG_OUTBOX_BUSY_TIMEOUT_MS     5000              /* SQLite busy_timeout of outbox.db */
#define EG_UPLOAD_MIN_BACKOFF_MS      1000              /* first retry delay after a failure */
#define EG_UPLOAD_MAX_BACKOFF_MS      (5 * 60 * 1000)   /* longest (upload_retry_max_ms) */
#define EG_UPLOAD_MAX_RETRY_AFTER_MS  (60 * 60 * 1000)  /* a longer Retry-After is cut to this */
#define EG_UPLOAD_DEFAULT_HEARTBEAT_S 60                /* empty batch when idle this long */
#define EG_UPLOAD_MIN_HEARTBEAT_S     1
#define EG_UPLOAD_MAX_HEARTBEAT_S     3600
#define EG_UPLOAD_TIMEOUT_MS          30000       /* one POST, whole request */
#define EG_UPLOAD_MAX_RESPONSE_BYTES  (64 * 1024) /* the console's answer */
#define EG_UPLOAD_MIN_HMAC_KEY_LEN    32          /* upload.hmac_key bytes */
#define EG_UPLOAD_MAX_HMAC_KEY_LEN    1024

/* ---- inventory and its scheduler (agent/inventory, agent/scheduler) ---- */
#define EG_INVENTORY_CHUNK             500    /* records compared and committed per transaction */
#define EG_INVENTORY_BUSY_TIMEOUT_MS   5000   /* SQLite busy_timeout of inventory.db */
#define EG_INVENTORY_CACHE_KIB         16384  /* SQLite page cache of inventory.db */
#define EG_INVENTORY_MAX_PAGES         100000 /* inventory pages of one sync */
#define EG_INVENTORY_SINCE_MARGIN_MS   (10 * 60 * 1000)     /* overlap of quick-sync windows */
#define EG_INVENTORY_WIPE_WATCH_MS     (7LL * 86400 * 1000) /* a pending wipe is re-checked */
#define EG_INVENTORY_DEFAULT_STATS     100                  /* inventory.stats_per_sync */
#define EG_INVENTORY_MAX_STATS         10000                /* its upper bound */
#define EG_INVENTORY_DEFAULT_STATS_GAP 200                  /* inventory.stats_interval_ms */
#define EG_INVENTORY_MAX_STATS_GAP     60000                /* its upper bound */
#define EG_INVENTORY_DEFAULT_MBX_READS 100   /* one-mailbox list reads per full sync */
#define EG_SCHEDULER_CONFIG_POLL_MS    5000  /* an idle scheduler re-reads the schedule */
#define EG_SCHEDULER_RETRY_MS          60000 /* a failed scheduled sync is tried again after */

/* ---- PSRP fragments and messages (exchange/psrp_fragment, exchange/psrp_message) ---- */
#define EG_PSRP_MAX_MESSAGE (64 * 1024 * 1024) /* one reassembled PSRP message (header + data) */
#define EG_PSRP_MAX_FRAGMENT_BLOB                                                                  \
    (16 * 1024 * 1024)             /* BlobLength of one fragment (<= envelope)                     \
                                    */
#define EG_PSRP_MAX_IN_PROGRESS 64 /* objects partly received at once, per defragmenter */
#define EG_PSRP_MAX_BUFFERED                                                                       \
    (128 * 1024 * 1024) /* bytes of partial messages held, per defragmenter */

/* ---- CLIXML (exchange/clixml) ---- */
#define EG_CLIXML_MAX_DEPTH 64 /* element nesting below a message's element */
#define EG_CLIXML_MAX_MEMBERS                                                                      \
    (64 * 1024)                                    /* items, entries, Props or MS of one object,   \
                                                      names in one <TN> */
#define EG_CLIXML_MAX_STRING    (16 * 1024 * 1024) /* one text or attribute value, as on the wire */
#define EG_CLIXML_MAX_OBJECTS   (256 * 1024)       /* <Obj> (RefIds) in one message */
#define EG_CLIXML_MAX_TYPENAMES (64 * 1024)        /* <TN> lists in one message / <Objs> document */
#define EG_CLIXML_MAX_VALUES    (1024 * 1024)      /* value nodes of any kind in one message */
#define EG_CLIXML_MAX_MESSAGE_BYTES                                                                \
    (64 * 1024 * 1024)             /* one message: decode input, encode output,                    \
                                      one streamed top-level value */
#define EG_CLIXML_MAX_REFID_LEN 32 /* RefId attribute text */

/* ---- WS-Man and its HTTP client (transport/wsman, transport/http_client) ---- */
/* One SOAP response: parse input, and the HTTP client's default body limit. */
#define EG_WSMAN_MAX_RESPONSE_BYTES (64 * 1024 * 1024)
/* rsp:Stream elements in one ReceiveResponse. */
#define EG_WSMAN_MAX_STREAMS 4096
/* Nested f:WSManFault / f:ProviderFault levels in one fault. */
#define EG_WSMAN_MAX_FAULT_DEPTH 8
/* Element nesting in one response. */
#define EG_WSMAN_MAX_DEPTH 64
/* Attributes + namespace declarations of one start tag (libxml2 compares them pairwise). */
#define EG_WSMAN_MAX_ATTRIBUTES 256
/* Elements + attributes + namespace declarations + comments + PIs + CDATA sections in one
 * response (bounds the memory of the tree). */
#define EG_WSMAN_MAX_NODES (256 * 1024)
/* MaxEnvelopeSize header (bytes) until the server's protocolversion is known (pypsrp's). */
#define EG_WSMAN_DEFAULT_MAX_ENVELOPE 153600
#define EG_WSMAN_MAX_MAX_ENVELOPE     (64 * 1024 * 1024)
/* OperationTimeout header. */
#define EG_WSMAN_DEFAULT_OPERATION_TIMEOUT_MS 20000
#define EG_WSMAN_MAX_OPERATION_TIMEOUT_MS     (24 * 3600 * 1000)
/* HTTP client: connect (TCP + TLS), and a whole request (a Receive passes its own, longer than
 * its OperationTimeout). */
#define EG_HTTP_CLIENT_DEFAULT_CONNECT_TIMEOUT_MS 10000
#define EG_HTTP_CLIENT_DEFAULT_TIMEOUT_MS         60000
/* No byte sent or received for this long (libcurl low-speed limit, whole seconds). */
#define EG_HTTP_CLIENT_DEFAULT_IO_TIMEOUT_MS 10000
/* Any configured timeout above this is refused as absurd (EG_EINVAL). */
#define EG_HTTP_CLIENT_MAX_TIMEOUT_MS (24 * 3600 * 1000)
/* Response header bytes kept for eg_http_client_response_header (more: EG_ELIMIT). */
#define EG_HTTP_CLIENT_MAX_HEADER_BYTES (64 * 1024)
/* Extra request headers of one eg_http_client_request. */
#define EG_HTTP_CLIENT_MAX_EXTRA_HEADERS 32

/* ---- GSSAPI and message sealing (transport/gss) ---- */
#define EG_GSS_MAX_TOKEN_BYTES                                                                     \
    (64 * 1024)                     /* one handshake token (a Kerberos ticket with a PAC)          \
                                     */
#define EG_GSS_RENEW_MARGIN_S  10   /* tickets living shorter than this are renewed first */
#define EG_GSS_MAX_STEPS       16   /* token exchanges of one handshake, per side */
#define EG_GSS_MAX_NAME        1024 /* principal / host name bytes */
#define EG_GSS_MAX_PASSWORD    1024 /* password bytes */
#define EG_GSS_MAX_SIGNATURE   1024 /* sealed message: signature / Kerberos header bytes */
#define EG_GSS_NTLM_SIGNATURE  16   /* NTLM signature length (fixed) */
#define EG_GSS_MAX_PART_HEADER 1024 /* one header line of a multipart/encrypted part */
/* A whole multipart/encrypted body: the largest plaintext plus headers and signature. */
#define EG_GSS_MAX_SEALED_BODY (EG_WSMAN_MAX_RESPONSE_BYTES + 8 * 1024)

/* ---- PSRP message bodies (exchange/psrp_objects) ---- */
#define EG_PSRP_MAX_CMDLET_NAME 128 /* bytes of a cmdlet name built by the client (Verb-Noun) */
#define EG_PSRP_MAX_PARAM_NAME  128 /* bytes of a parameter name built by the client */
#define EG_PSRP_MAX_COMMANDS    64  /* commands in one pipeline, all statements together */
#define EG_PSRP_MAX_PARAMS      256 /* parameters (named and positional) of one command */

/* ---- mock Exchange front end (tests/mock-exchange: wsman_server, frontend; test-only) ---- */
#define EG_MOCK_WS_MAX_REQUEST_BYTES (16 * 1024 * 1024) /* one SOAP request body -> 413 */
#define EG_MOCK_WS_MAX_PAIRS         64           /* selectors, options of one request (each) */
#define EG_MOCK_WS_MAX_STREAMS       256          /* rsp:Stream elements of one Send */
#define EG_MOCK_MIN_ENVELOPE         8192         /* smallest MaxEnvelopeSize the server accepts */
#define EG_MOCK_MAX_HOLD_MS          (180 * 1000) /* longest a Receive is held (OperationTimeout) */
#define EG_MOCK_MAX_SHELLS           1024         /* open shells, all users */
#define EG_MOCK_MAX_SHELL_PIPELINES  64           /* live pipelines of one shell */
#define EG_MOCK_MAX_RUNNING          256          /* pipeline threads at once, all shells */
#define EG_MOCK_KEEP_DONE            32 /* finished, not terminated pipelines kept per shell */
#define EG_MOCK_QUEUE_BYTES          (1024 * 1024) /* encoded output waiting, per pipeline */
#define EG_MOCK_MAX_LISTENERS        16
#define EG_MOCK_MAX_USERS            1024 /* --users lines */
#define EG_MOCK_MAX_USERS_FILE       (1024 * 1024)
#define EG_MOCK_MAX_CONTROL_BODY     (1024 * 1024) /* one control API request */
#define EG_MOCK_DEFAULT_IDLE_MS      (900 * 1000)  /* Exchange /PowerShell IdleTimeOut */
/* Exchange targets (exchange/bridge_multi.h, agent runtime config) */
#define EG_MAX_SERVERS_PER_TARGET 16 /* CAS /PowerShell endpoints of one target */
/* Server-list options of a multi-server target (eg_bridge_multi_opts): bounds and defaults. */
#define EG_MULTI_MIN_DEAD_THRESHOLD        1
#define EG_MULTI_MAX_DEAD_THRESHOLD        100
#define EG_MULTI_DEFAULT_DEAD_THRESHOLD    3
#define EG_MULTI_MIN_FAILURE_WINDOW_MS     1000
#define EG_MULTI_MAX_FAILURE_WINDOW_MS     (60 * 60 * 1000)
#define EG_MULTI_DEFAULT_FAILURE_WINDOW_MS 60000
#define EG_MULTI_MIN_DEAD_TIME_MS          1000
#define EG_MULTI_MAX_DEAD_TIME_MS          (60 * 60 * 1000)
#define EG_MULTI_DEFAULT_DEAD_TIME_MS      30000
#define EG_MULTI_MIN_HEALTH_INTERVAL_S     10
#define EG_MULTI_MAX_HEALTH_INTERVAL_S     600
#define EG_MULTI_DEFAULT_HEALTH_INTERVAL_S 60
#define EG_MULTI_MIN_LIVE_THRESHOLD        1
#define EG_MULTI_MAX_LIVE_THRESHOLD        10
#define EG_MULTI_DEFAULT_LIVE_THRESHOLD    3

/* mock Exchange REST front end (tests/mock-exchange/rest_server.c; test-only) */
#define EG_MOCK_REST_MAX_PAGE_SIZE 1000         /* objects per InvokeCommand page (odata) */
#define EG_MOCK_REST_MAX_CURSORS   256          /* nextLink cursors kept (oldest evicted) */
#define EG_MOCK_REST_CURSOR_TTL_MS (600 * 1000) /* a nextLink cursor expires after this */
#define EG_MOCK_REST_MAX_DEPTH     8            /* nesting of a JSON parameter value */
#define EG_MOCK_REST_MAX_PARAMS    256          /* parameters of one InvokeCommand */

/* ---- runtime target configuration (agent/target_config, agent/secretbox; PUT /api/v1/config) */
#define EG_SECRETBOX_KEY_BYTES                32           /* AES-256 key in the key file */
#define EG_MAX_SECRET_BYTES                   (256 * 1024) /* one sealed secret (password, key) */
#define EG_MAX_TARGET_FILE_BYTES              (4 * 1024 * 1024) /* <state_dir>/target.json */
#define EG_MAX_URL_LEN                        2048         /* server, API, token and upload URLs */
#define EG_MAX_PEM_BYTES                      (256 * 1024) /* ca_pem, certificate, private_key */
#define EG_MAX_USERNAME_LEN                   256          /* Exchange account */
#define EG_MAX_PASSWORD_LEN                   1024         /* its password */
#define EG_DEFAULT_TARGET_CONCURRENCY         4            /* max_concurrency */
#define EG_DEFAULT_COMMANDS_PER_SHELL         500
#define EG_MAX_COMMANDS_PER_SHELL             100000
#define EG_MIN_TARGET_TIMEOUT_MS              100 /* connect/io/response timeouts */
#define EG_MAX_TARGET_TIMEOUT_MS              (60 * 60 * 1000)
#define EG_DEFAULT_TARGET_CONNECT_TIMEOUT_MS  10000
#define EG_DEFAULT_TARGET_IO_TIMEOUT_MS       10000
#define EG_DEFAULT_TARGET_RESPONSE_TIMEOUT_MS 60000
#define EG_MIN_QUICK_SYNC_INTERVAL_S          60
#define EG_MAX_QUICK_SYNC_INTERVAL_S          86400
#define EG_DEFAULT_QUICK_SYNC_INTERVAL_S      900
#define EG_MIN_FULL_SYNC_INTERVAL_S           3600
#define EG_MAX_FULL_SYNC_INTERVAL_S           (30 * 86400)
#define EG_DEFAULT_FULL_SYNC_INTERVAL_S       86400
#define EG_MAX_RETRY_DEADLINE_MS              (7LL * 24 * 60 * 60 * 1000) /* retry.deadline_ms */

/* ---- Exchange Online REST (exchange/rest_json, exchange/eo_token, exchange/bridge_rest) ---- */
#define EG_REST_MAX_RESPONSE_BYTES (32 * 1024 * 1024) /* one InvokeCommand or token response */
#define EG_REST_MAX_JSON_DEPTH     32                 /* nesting of a response's JSON */
#define EG_REST_MAX_PAGES          10000              /* @odata.nextLink pages of one command */
#define EG_REST_MAX_ERROR_TEXT     1024 /* bytes of a non-JSON error body kept for the message */
#define EG_REST_MAX_RETRY_AFTER_MS (3600 * 1000) /* a longer Retry-After is cut to this */
#define EG_REST_MAX_PAGE_SIZE      1000          /* Prefer: odata.maxpagesize */
#define EG_EO_MAX_TOKEN_BYTES      (16 * 1024)   /* an access token */
#define EG_EO_ASSERTION_LIFETIME_S 600           /* the client assertion's exp - nbf */
#define EG_EO_MAX_TOKEN_LIFETIME_S (24 * 3600)   /* a longer expires_in is cut to this */
#define EG_EO_REFRESH_MARGIN_S     300           /* refresh this long (or 10 %) before expiry */

#endif
