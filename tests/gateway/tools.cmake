# OpenAI tool calls answered by the local model through `wye serve` (the built binary: needs the
# wye target), JSON and SSE.
if(TARGET wye AND TARGET wye_agents)
  wye_test(test_gateway_tools test_gateway_tools.c wye_gw_testutil wye_agents wye_common)
  add_dependencies(test_gateway_tools wye)
  set_tests_properties(test_gateway_tools PROPERTIES TIMEOUT 120)
endif()
