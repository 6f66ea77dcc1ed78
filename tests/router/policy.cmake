# The routing policy (router/policy.c, hook.c): decisions, key routes and budgets, the breaker
# with an injected clock, and the Lua route hook (normal and hostile).
wye_test(test_policy test_policy.c wye_router wye_conf wye_common)
# The router over both backends (stub upstream + stories260K) with a real ledger.
wye_test(test_routing test_routing.c wye_router_testutil wye_ledger_testutil wye_router wye_conf)
set_tests_properties(test_routing PROPERTIES TIMEOUT 120)
