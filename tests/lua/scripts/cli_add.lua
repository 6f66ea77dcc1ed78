-- Used by test_cli.c: returns a table with main, called with the decoded JSON arguments.
local M = {}

function M.main(args)
  print("adding", args.a, "and 41")
  wye.sleep(1)
  return { sum = args.a + 41 }
end

return M
