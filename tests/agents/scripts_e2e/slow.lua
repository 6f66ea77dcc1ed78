-- Used by tests/agents/test_agents_e2e.c: a tool parked on a slow HTTP request.
tool {
  name = "slowfetch",
  parameters = {type = "object", properties = {url = {type = "string"}}, required = {"url"}},
  run = function(args, ctx)
    return wye.http.request {url = args.url, timeout = 30}.body
  end,
}

tool {
  name = "bigfetch",
  parameters = {type = "object", properties = {url = {type = "string"}}, required = {"url"}},
  run = function(args, ctx)
    local ok, err = pcall(wye.http.request, {url = args.url})
    return {ok = ok, err = err}
  end,
}

workflow("slowflow", function(ctx, input)
  return ctx:tool("slowfetch", {url = input.url})
end)

workflow("bigflow", function(ctx, input)
  return ctx:tool("bigfetch", {url = input.url})
end)

-- With tests/stub's "#stub tools=1" (which always asks for the first tool with {"city":"Paris"}).
tool {
  name = "weather",
  description = "the weather in a city",
  parameters = {type = "object", properties = {city = {type = "string"}}, required = {"city"}},
  run = function(args, ctx)
    return "sunny in " .. args.city
  end,
}

agent {
  name = "forecaster",
  system = "Answer weather questions.",
  tools = {"weather"},
  max_steps = 2,
}

-- ctx:chat with tools (test_chat_tools_passthrough): returns the call the model asked for.
workflow("toolchat", function(ctx, input)
  local r = ctx:chat {
    model = "remote",
    prompt = input,
    tools = {{
      type = "function",
      ["function"] = {
        name = "find_order",
        description = "find an order",
        parameters = {type = "object", properties = {order_id = {type = "string"}},
                      required = {"order_id"}},
      },
    }},
  }
  local call = r.tool_calls and r.tool_calls[1]
  if not call then
    return {text = r.text}
  end
  local args = wye.json.decode(call["function"].arguments)
  return {name = call["function"].name, order_id = args.order_id}
end)
