# Tests of the agents runtime (agents/) and its router host (router/agent_host.c).
wye_test(test_agents_tools test_agents_tools.c wye_agents PkgConfig::CJSON)
wye_test(test_agents_run test_agents_run.c wye_agents PkgConfig::CJSON)
add_library(wye_agents_test_server STATIC agent_test_server.c)
target_link_libraries(wye_agents_test_server PUBLIC PkgConfig::CJSON Threads::Threads)
# An agent run's outcome waited for by the tests that submit runs over the router.
add_library(wye_agents_test_outcome STATIC agent_test_outcome.c)
target_link_libraries(wye_agents_test_outcome PUBLIC wye_agents Threads::Threads)
wye_test(test_agents_e2e test_agents_e2e.c wye_agents_test_outcome wye_agents_test_server
         wye_router wye_agents PkgConfig::CJSON)
wye_test(test_agents_stub test_agents_stub.c wye_stub_upstream wye_common PkgConfig::CJSON)
if(TARGET wye)
  add_dependencies(test_agents_stub wye)
endif()
# Streaming an agent's answer over the gateway (WebSocket and SSE) against the stub upstream.
if(TARGET wye_gateway)
  wye_test(test_agents_stream test_agents_stream.c wye_gw_stack wye_gw_testutil wye_gateway
           wye_router wye_agents wye_conf wye_stub_upstream wye_common)
  set_tests_properties(test_agents_stream PROPERTIES TIMEOUT 120)
endif()
# Agents on the local track: response_format answered by stories260K under its schema.
wye_test(test_agents_local test_agents_local.c wye_agents_test_outcome wye_router wye_agents
         PkgConfig::CJSON)
set_tests_properties(test_agents_local PROPERTIES TIMEOUT 120)
# `wye agent run support "Where is my order 1234?"` as typed (the built binary, fork/exec).
if(TARGET wye)
  wye_test(test_agents_cli test_agents_cli.c wye_agents_test_server)
  add_dependencies(test_agents_cli wye)
  set_tests_properties(test_agents_cli PROPERTIES TIMEOUT 120)
endif()
# Several agent workers, each with its own Lua state (spinners and memory hogs stay on theirs).
wye_test(test_agents_workers test_agents_workers.c wye_agents)
set_tests_properties(test_agents_workers PROPERTIES TIMEOUT 120)
