-- Workflows for tests/gateway/test_gateway_wiring_agents.c: hostile ones that `wye serve` must
-- survive while it keeps answering chats, and a friendly one to show the workers recovered.

-- an endless loop: ends at the instruction limit
workflow("spin", function(ctx, input)
  while true do
  end
end)

-- a memory bomb: ends at the worker state's memory limit
workflow("bomb", function(ctx, input)
  local t = {}
  local i = 0
  while true do
    i = i + 1
    t[i] = string.rep("x", 65536) .. i
  end
end)

-- few instructions but much time each (64 KiB copies, garbage at once): runs until cancelled
-- (or the Lua time limit)
workflow("grind", function(ctx, input)
  local n = 0
  while true do
    local s = string.rep("y", 65536)
    n = n + #s
  end
end)

-- a well-behaved run: one local model call
workflow("hello", function(ctx, input)
  local r = ctx:chat {model = "local", prompt = "hi", max_tokens = 4}
  return {route = r.route}
end)
