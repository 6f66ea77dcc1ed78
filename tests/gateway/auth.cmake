# API key authentication over HTTP and WebSocket against a real server (router/keys.c).
if(TARGET wye_router AND TARGET wye_conf)
  wye_test(test_gateway_auth test_gateway_auth.c wye_gw_testutil wye_gateway wye_router wye_conf
           wye_common)
  set_tests_properties(test_gateway_auth PROPERTIES TIMEOUT 120)
endif()
