# Agent runs under API keys (gateway/gw_agents.c, router/agent_host.c): `wye serve` with keys,
# stories260K and the agents' scripted upstream; routes, budgets and ledger attribution.
if(TARGET wye AND TARGET wye_agents_test_server)
  wye_test(test_gateway_agent_keys test_gateway_agent_keys.c wye_gw_testutil
           wye_agents_test_server wye_common)
  add_dependencies(test_gateway_agent_keys wye)
  set_tests_properties(test_gateway_agent_keys PROPERTIES TIMEOUT 120)
endif()
