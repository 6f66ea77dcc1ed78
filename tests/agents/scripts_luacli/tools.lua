-- Used by test_lua_cli.c: two tools, so --tool chooses one. `add` checks its arguments against
-- a schema; `fetch` reads a page with wye.http.request from whatever the CLI allows
-- (--allow-host); `fetch_local` declares its own allow_hosts.
tool {
  name = "add",
  description = "Add two integers",
  parameters = {
    type = "object",
    properties = {a = {type = "integer"}, b = {type = "integer"}},
    required = {"a", "b"},
    additionalProperties = false,
  },
  run = function(args, ctx)
    if args.a < 0 then error("negative numbers are not supported") end
    return {sum = args.a + args.b, tool = ctx.tool_name}
  end,
}

local function fetch(args)
  local r = wye.http.request {url = args.url}
  return {status = r.status, body = r.body}
end

tool {
  name = "fetch",
  parameters = {type = "object", properties = {url = {type = "string"}}, required = {"url"}},
  run = fetch,
}

tool {
  name = "fetch_local",
  parameters = {type = "object", properties = {url = {type = "string"}}, required = {"url"}},
  allow_hosts = {"127.0.0.1"},
  run = fetch,
}
