-- Used by tests/agents/test_agents_workers.c (a fake host): runs that hold up or fill their
-- worker, and innocent runs beside them.

-- Spins until the instruction limit ends it.
workflow("spinner", function(ctx, input)
  ctx:emit {type = "spinning"}
  while true do end
end)

workflow("quick", function(ctx, input)
  return "quick done"
end)

-- Holds input.mb MiB of strings, then parks on an HTTP request the test answers at the end.
workflow("holder", function(ctx, input)
  local keep = {}
  for i = 1, input.mb * 16 do
    keep[i] = ("h"):rep(65536 - 32) .. i
  end
  ctx:http {url = "http://127.0.0.1/park"}
  return #keep
end)

-- Allocates input.mb MiB (an innocent run that fits the state's limit on its own).
workflow("innocent", function(ctx, input)
  local t = {}
  for i = 1, input.mb * 16 do
    t[i] = ("i"):rep(65536 - 32) .. i
  end
  return #t
end)
