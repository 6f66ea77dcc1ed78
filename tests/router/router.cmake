# router/: the SSE parser, and the upstream client + router against the stub upstream.
add_library(wye_router_testutil STATIC ${CMAKE_CURRENT_LIST_DIR}/test_sink_util.c)
target_link_libraries(wye_router_testutil PUBLIC wye_router wye_stub_upstream)
wye_test(test_router_sse test_sse.c wye_router)
wye_test(test_router_upstream test_upstream.c wye_router_testutil)
wye_test(test_router_upstream_fail test_upstream_fail.c wye_router_testutil)
