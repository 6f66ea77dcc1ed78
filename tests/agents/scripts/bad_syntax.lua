tool {
  name = "x",
  run = function() end
