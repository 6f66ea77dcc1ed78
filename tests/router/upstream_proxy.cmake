# The upstream client with and without a proxy variable (the stub upstream as the proxy).
wye_test(test_router_upstream_proxy test_upstream_proxy.c wye_router_testutil)
