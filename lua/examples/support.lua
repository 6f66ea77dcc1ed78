-- A customer-support agent with two tools over lua/examples/data/orders.json.
-- Try: wye agent run support "Where is my order 1234?"

local function orders(ctx)
  return ctx:data("orders.json")
end

tool {
  name = "order_lookup",
  description = "Look up an order by its id: status, carrier, tracking number, ETA, items.",
  parameters = {
    type = "object",
    properties = {
      order_id = {type = "string", description = "the order number, e.g. \"1234\""},
    },
    required = {"order_id"},
    additionalProperties = false,
  },
  run = function(args, ctx)
    local o = orders(ctx)[args.order_id]
    if not o then
      return "no order " .. args.order_id .. " found"
    end
    o.order_id = args.order_id
    return o
  end,
}

tool {
  name = "refund",
  description = "Refund an order (only orders marked refundable). Returns the refund reference.",
  parameters = {
    type = "object",
    properties = {
      order_id = {type = "string"},
      reason = {type = "string", enum = {"damaged", "late", "not_needed", "other"}},
    },
    required = {"order_id", "reason"},
  },
  run = function(args, ctx)
    local o = orders(ctx)[args.order_id]
    if not o then
      error("no order " .. args.order_id)
    end
    if not o.refundable then
      return {ok = false, message = "order " .. args.order_id .. " is not refundable"}
    end
    ctx:emit {type = "refund", order_id = args.order_id, amount_usd = o.total_usd}
    return {ok = true, refund_ref = "RF-" .. args.order_id, amount_usd = o.total_usd}
  end,
}

agent {
  name = "support",
  system = "You are a friendly customer-support agent for a small electronics shop. "
    .. "Use order_lookup to answer questions about orders and refund only when the customer "
    .. "asks for it and gives a reason. Never invent order data.",
  tools = {"order_lookup", "refund"},
  model = "auto",
  max_steps = 6,
  max_cost_usd = 0.05,
  timeout_s = 60,
}
