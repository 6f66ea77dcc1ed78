# `wye lua run` (router/lua_cli.c) as typed: the built binary, fork/exec, from the source tree,
# with scripts in scripts_luacli/ and the scripted upstream/page server (agent_test_server.c).
if(TARGET wye)
  wye_test(test_agents_lua_cli test_agents_lua_cli.c wye_agents_test_server)
  add_dependencies(test_agents_lua_cli wye)
  set_tests_properties(test_agents_lua_cli PROPERTIES TIMEOUT 180)
endif()
