-- Used by test_pattern.c: runs string.find/match/gmatch/gsub over many subjects and patterns
-- and returns one line per case, so the sandbox's matcher can be compared with Lua's own.
return function()
  local patterns = {
    "a", "a*", "a-", "a+", "a?b", "^a", "a$", "^$", ".", "%a+", "%A", "%d+", "%D",
    "^%s*(.-)%s*$", "%s*(.-)%s*$", "[abc]", "[^abc]", "[a-c]+", "[%a_][%w_]*", "[]]", "[^]]",
    "[a-]", "%.", "%%", "(a)(b)", "()a()", "(a*(.)%w(%s*))", "%bxy", "%b()", "%f[%w]%w+",
    "%f[%W]", "(%w+)=(%w+)", "(.)%1", "((a)%2)", "$", "a.-b", "x*$", "%x%x", "[%d%.]+",
    "[+-]?%d+", "%u%l*", "%p", "%c", "%g+", "^(%w+)", "(h)(e)(l)(l)(o)", "[%]]", "%]", "",
    "()", "^", "a-$", ".-", "[%s%p]", "%z", "[a-c-e]", "%f[%z]", "(%()", "[", "%", "(",
    ")", "%b", "%bx", "%f", "%1", "(()", "[%", "%f[", "((((((((((((((((((((((((((((((((((a",
  }
  local subjects = {
    "", "a", "aaa", "abc", "hello world", "  trim me  ", "x=1, y=22", "(foo(bar))baz",
    "THE (quick) fox", "a.b.c", "\0a\0", "aab", "abab", "xyxxyy", "12.5e3", "-42", "hello",
    "]]", "a-b", "%a%", "\255\1x",
  }
  -- Plus random short patterns and subjects (a fixed LCG: both sides see the same ones).
  local seed = 12345
  local function rnd(n)
    seed = (seed * 1103515245 + 12345) % 2147483648
    return seed % n + 1
  end
  local function rstr(alpha, max)
    local t = {}
    for i = 1, rnd(max + 1) - 1 do
      local k = rnd(#alpha)
      t[i] = alpha:sub(k, k)
    end
    return table.concat(t)
  end
  for _ = 1, 150 do
    patterns[#patterns + 1] = rstr("ab.%[]^$*+-?()1fwsx", 8)
  end
  for _ = 1, 6 do
    subjects[#subjects + 1] = rstr("ab ()[]%.-x1", 12)
  end
  local function show(ok, ...)
    if not ok then return "ERR" end
    local out = {}
    for i = 1, select("#", ...) do
      local v = select(i, ...)
      out[#out + 1] = type(v) == "string" and ("%q"):format(v) or type(v) .. ":" .. tostring(v)
    end
    return table.concat(out, ",")
  end
  local function gm(s, p, init)
    local out = {}
    for a, b in string.gmatch(s, p, init) do
      out[#out + 1] = ("%q/%q"):format(tostring(a), tostring(b))
      if #out > 50 then break end
    end
    return table.concat(out, ";")
  end
  local ops = {
    function(s, p) return string.find(s, p) end,
    function(s, p) return string.find(s, p, 2) end,
    function(s, p) return string.find(s, p, -2) end,
    function(s, p) return string.find(s, p, 1, true) end,
    function(s, p) return string.find(s, p, 40) end,
    function(s, p) return string.match(s, p) end,
    function(s, p) return string.match(s, p, 3) end,
    function(s, p) return gm(s, p) end,
    function(s, p) return gm(s, p, 2) end,
    function(s, p) return string.gsub(s, p, "<%0>") end,
    function(s, p) return string.gsub(s, p, "%1|%%") end,
    function(s, p) return string.gsub(s, p, function(...) return select("#", ...) end) end,
    function(s, p) return string.gsub(s, p, { a = "A", [""] = false, h = 1 }) end,
    function(s, p) return string.gsub(s, p, "x", 1) end,
    function(s, p) return s:gsub(p, "%2") end,
  }
  local lines = {}
  for pi, p in ipairs(patterns) do
    for si, s in ipairs(subjects) do
      for oi, op in ipairs(ops) do
        lines[#lines + 1] = pi .. "/" .. si .. "/" .. oi .. " " .. show(pcall(op, s, p))
      end
    end
  end
  return table.concat(lines, "\n")
end
