-- Used by tests/agents/test_agents_local.c (a router with only stories260K): ctx:chat with a
-- response_format json_schema, answered by the local model under the schema's constraint.

local SCHEMA = {
  type = "object",
  properties = {
    category = {type = "string", enum = {"account", "billing", "shipping", "other"}},
    urgent = {type = "boolean"},
    items = {type = "integer"},
  },
  required = {"category", "urgent", "items"},
  additionalProperties = false,
}

workflow("classify", function(ctx, input)
  local r = ctx:chat {
    model = "local",
    max_tokens = 96,
    prompt = type(input) == "string" and input or wye.json.encode(input),
    response_format = {type = "json_schema", json_schema = {name = "ticket", schema = SCHEMA}},
  }
  return {route = r.route, text = r.text, schema = wye.json.encode(SCHEMA)}
end)
