# Agents over the gateway (gateway/gw_agents.c): WebSocket agent.run / agent.cancel and
# POST /v1/agents/{name}/runs against the real router, agents runtime and stub upstream.
if(TARGET wye_router AND TARGET wye_conf AND TARGET wye_stub_upstream AND TARGET wye_agents)
  wye_test(test_gateway_agents test_gateway_agents.c wye_gw_stack wye_gw_testutil wye_gateway
           wye_router wye_agents wye_conf wye_stub_upstream wye_common)
  set_tests_properties(test_gateway_agents PROPERTIES TIMEOUT 120)
endif()
