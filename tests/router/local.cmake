# router/local.c: the engine worker as a router backend (stories260K, a mkmodel'd tiny qwen2).
wye_test(test_router_local test_local.c wye_router_testutil)
