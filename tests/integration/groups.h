/*
 * groups: the integration suite's cmocka groups, one per file. main.c runs them in the order
 * below; each returns cmocka's count of failed tests. Each group starts the fanout processes it
 * needs and stops them with an exit-status check (the group's last test, "clean_exit").
 */
#ifndef FANOUT_TESTS_GROUPS_H
#define FANOUT_TESTS_GROUPS_H

int it_endpoints(void);    /* test_endpoints.c: routes, status codes, error bodies, keep-alive */
int it_values(void);       /* test_values.c: every value type, row formats, max_rows */
int it_params(void);       /* test_params.c: hostile parameter strings, parameter conversion */
int it_transactions(void); /* test_transactions.c: commit, rollback, commit errors, isolation */
int it_batches(void);      /* test_batches.c: mixed good and failing queries, SQL error fields */
int it_concurrency(void);  /* test_concurrency.c: 16 workers really run 16 queries at once */
int it_reconnect(void);    /* test_reconnect.c: backends terminated under fanout */
int it_cli(void);          /* test_cli.c: --help, --version, configuration errors */
int it_contract(void);     /* test_contract.c: docs/openapi.yaml lints clean, real replies match it */
int it_reliability(void);   /* test_reliability.c: deadlines, cancel, client gone, db loss, SIGTERM */
int it_isolation(void);     /* test_isolation.c: no session state between batches; read-only holds */
int it_observability(void); /* test_observability.c: /metrics, promtool, access log, request ids */
int it_hostile(void);       /* test_hostile.c: malformed, oversized, truncated and slow HTTP requests */
int it_auth(void);          /* test_auth.c: API tokens, 401s, read_only tokens, SIGHUP reload, exposure */
int it_tls(void);           /* test_tls.c: HTTPS with curl --cacert, TLS 1.1 and plain HTTP refused */
int it_limits(void);        /* test_limits.c: max_rows cuts, result_too_large, bounded memory, NOTIFY */
int it_roles(void);         /* test_roles.c: per-token database roles, their pools and passwords */
int it_pipeline(void);      /* test_pipeline.c: quick statements share a round trip, slow ones spread */

#endif
