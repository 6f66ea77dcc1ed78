-- A page summariser: fetches a page from an allowlisted host and asks the model for a short
-- summary. Input: {url = "https://example.com/"} or the URL as text.
-- Try: wye agent run summarise https://example.com/

local function strip_html(s)
  s = s:gsub("<script.-</script>", " "):gsub("<style.-</style>", " ")
  s = s:gsub("<[^>]*>", " "):gsub("&nbsp;", " "):gsub("&amp;", "&")
  s = s:gsub("%s+", " ")
  return s
end

workflow {
  name = "summarise",
  allow_hosts = {"example.com", "www.example.com"},
  timeout_s = 60,
  run = function(ctx, input)
    local url = type(input) == "table" and input.url or tostring(input)
    local page = wye.http.request {method = "GET", url = url, timeout = 10}
    if page.status ~= 200 then
      error("fetching " .. url .. " answered HTTP " .. tostring(page.status))
    end
    local text = strip_html(page.body)
    if #text > 6000 then
      text = text:sub(1, 6000)
    end
    local r = ctx:chat {
      messages = {
        {role = "system", content = "Summarise the page in three short sentences."},
        {role = "user", content = text},
      },
      max_tokens = 200,
    }
    return {url = url, summary = r.text, chars = #text}
  end,
}
