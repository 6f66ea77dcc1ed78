/* The two gw_server.c functions the stream code (gw_stream.c) calls, for the gateway fuzz
 * targets, which drive streams with no server running: gw_server.c would bring in
 * libwebsockets' service loop, the HTTP and WebSocket handlers and through them the router and
 * the engine. With no lws thread there is nothing to wake and no list to unlink from. */
#include "gateway/gw_internal.h"

void gw_server_ready(struct gw_server *srv, struct gw_stream *s)
{
    (void)srv;
    (void)s;
}

void gw_server_untrack(struct gw_server *srv, struct gw_stream *s)
{
    (void)srv;
    (void)s;
}
