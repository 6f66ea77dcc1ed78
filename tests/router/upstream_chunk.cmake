# The streamed-chunk reader: the fast path against the cJSON path on the same bytes.
wye_test(test_router_upstream_chunk test_upstream_chunk.c wye_router)
# The upstream client with and without a proxy variable (the stub upstream as the proxy).
wye_test(test_router_upstream_chunk_proxy test_upstream_chunk_proxy.c wye_router_testutil)
