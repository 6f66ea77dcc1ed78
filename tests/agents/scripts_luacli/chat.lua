-- Used by test_lua_cli.c: a plain script that asks the model through the router (wye.chat).
return function(args)
  local r = wye.chat {prompt = args.q}
  return {text = r.text, route = r.route}
end
