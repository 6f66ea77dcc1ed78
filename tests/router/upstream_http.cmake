# Plain HTTP requests on the upstream client's thread (rt_upstream_http) against the stub
# upstream and the agents' page server.
wye_test(test_router_upstream_http test_upstream_http.c wye_router_testutil
         wye_agents_test_server)
