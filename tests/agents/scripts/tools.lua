-- Agents, tools and workflows driven by tests/agents/test_agents_run.c (a fake host).

tool {
  name = "lookup",
  description = "find an order",
  parameters = {type = "object", properties = {order_id = {type = "string"}},
                required = {"order_id"}},
  run = function(args, ctx)
    return {id = args.order_id, status = "shipped"}
  end,
}

tool {
  name = "boom",
  run = function(args, ctx)
    error("boom")
  end,
}

tool {
  name = "fetch",
  parameters = {type = "object", properties = {url = {type = "string"}}},
  run = function(args, ctx)
    local r = wye.http.request {url = args.url or "http://127.0.0.1/x"}
    return r.body
  end,
}

tool {
  name = "hog",
  run = function()
    local t = {}
    for i = 1, 100000000 do
      t[i] = ("x"):rep(64) .. i
    end
  end,
}

tool {
  name = "spin",
  run = function()
    while true do end
  end,
}

tool {
  name = "blob",
  parameters = {type = "object", properties = {n = {type = "integer"}}},
  run = function(args, ctx)
    return ("x"):rep(args.n or 1)
  end,
}

tool {
  name = "noop",
  run = function()
    return "ok"
  end,
}

agent {
  name = "helper",
  system = "test",
  tools = {"lookup", "boom", "fetch", "hog", "spin", "noop", "blob"},
  max_steps = 3,
  max_cost_usd = 0.05,
  allow_hosts = {"127.0.0.1"},
}

agent {
  name = "sleepy",
  tools = {"fetch"},
  timeout_s = 0.3,
  allow_hosts = {"127.0.0.1"},
}

workflow {
  name = "fanout",
  allow_hosts = {"127.0.0.1"},
  run = function(ctx, input)
    local out = ctx:all {
      function() return wye.http.request {url = "http://127.0.0.1/a"}.body end,
      function(c) return c:http {url = "http://127.0.0.1/b"}.body end,
      function() return "plain" end,
      function() return ctx:tool("fetch", {url = "http://127.0.0.1/c"}) end,
    }
    return out
  end,
}

workflow("chain", function(ctx, input)
  local r = ctx:tool("lookup", {order_id = input.id})
  local c = ctx:chat {prompt = "hi " .. r.status}
  ctx:emit {type = "progress", done = true}
  return {tool = r, text = c.text, cost = c.cost_usd}
end)

workflow("badtool", function(ctx)
  local ok, err = pcall(ctx.tool, ctx, "lookup", {order_id = 5})
  return err
end)

workflow("nohost", function(ctx)
  local ok, err = pcall(wye.http.request, {url = "http://evil.example/"})
  return err
end)

workflow("failing", function(ctx)
  local x = nil
  return x.field
end)

workflow("allhog", function(ctx)
  return ctx:all {
    function() return ctx:tool("noop", {}) end,
    function() return ctx:tool("hog", {}) end,
    function() return ctx:tool("noop", {}) end,
  }
end)

workflow {
  name = "costly",
  max_cost_usd = 0.05,
  run = function(ctx)
    for i = 1, 10 do
      ctx:chat {prompt = '{"cost":0.03}'}
    end
    return "never"
  end,
}
