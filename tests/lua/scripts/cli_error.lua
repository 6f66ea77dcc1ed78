-- Used by test_cli.c: a runtime error the user must be able to locate.
return function(args)
  local order = args.order
  return order.id
end
