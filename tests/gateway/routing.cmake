# `wye serve` routing between stories260K and the stub upstream with a real ledger, over HTTP
# and WebSocket, and a SIGKILL crash test (runs the built binary: needs the wye target).
if(TARGET wye AND TARGET wye_stub_upstream)
  wye_test(test_gateway_routing test_gateway_routing.c wye_gw_testutil wye_stub_upstream
           wye_common)
  add_dependencies(test_gateway_routing wye)
  set_tests_properties(test_gateway_routing PROPERTIES TIMEOUT 120)
endif()
