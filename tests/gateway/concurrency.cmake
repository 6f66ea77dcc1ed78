# Thousands of streamed requests at once through the real server (lost-wakeup regression).
wye_test(test_gateway_concurrency test_gateway_concurrency.c wye_gw_testutil wye_gateway wye_common
         PkgConfig::CURL)
set_tests_properties(test_gateway_concurrency PROPERTIES TIMEOUT 200)
