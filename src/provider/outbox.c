/*
 * The outbox provider (the embedded default): instead of paying a carrier, it records the
 * rendered message in the store's outbox table, where `telehook outbox list` shows it. It holds
 * the message text — OTP included — because it plays the handset; it is a development provider.
 *
 * The record is handed to a sink (serve: the store's writer thread) with a reply on the sending
 * loop; the send completes there once the sink has kept it, as a network provider's does.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "obs/log.h"
#include "provider/provider.h"

struct outbox {
    struct th_provider base;
    struct th_outbox_sink sink;
};

struct pending { /* in the request's arena: it goes with it */
    th_send_done_fn done;
    void *ud;
    struct th_send_result res;
};

/* On the loop that started the send, once the sink has kept the item (or could not). */
static void written(void *arg, th_err result)
{
    struct pending *p = arg;
    if (result != TH_E_OK) {
        p->res.err = TH_E_PROVIDER;
        p->res.retryable = true;
        th_strlcpy(p->res.error, "outbox: store write failed", sizeof p->res.error);
    }
    p->done(p->ud, &p->res);
}

static th_err outbox_send(struct th_provider *prov, const struct th_attempt *at,
                          const struct th_send *msg, th_send_done_fn done, void *ud)
{
    struct outbox *ob = (struct outbox *)prov;
    if (!ob->sink.put)
        return TH_E_INVAL;
    struct pending *p = th_arena_calloc(at->arena, sizeof *p);
    if (!p)
        return TH_E_NOMEM;
    p->done = done;
    p->ud = ud;
    th_err e = th_time_id("ob-", p->res.transaction_id, sizeof p->res.transaction_id);
    if (e != TH_E_OK)
        return e;
    struct th_outbox_item item = {
        .id = p->res.transaction_id,
        .created_ms = th_wall_ms(),
        .request_id = msg->request_id,
        .to = msg->to,
        .channel = th_channel_name(msg->channel),
        .language = msg->language,
        .body = msg->body,
        .voice_id = msg->voice_id ? msg->voice_id : "",
    };
    /* no lost(): at shutdown nothing waits, and the pending goes with the request's arena */
    const struct th_loop_reply reply = {at->loop, written, NULL, p};
    return ob->sink.put(ob->sink.ud, &item, &reply);
}

static void outbox_free(struct th_provider *prov)
{
    free(prov);
}

static const struct th_provider_ops outbox_ops = {
    .send = outbox_send,
    .free = outbox_free,
};

static th_err outbox_new(const struct th_config *cfg, const struct th_outbox_sink *sink,
                         struct th_provider **out, char *err, size_t errlen)
{
    (void)cfg;
    (void)err;
    (void)errlen;
    struct outbox *ob = calloc(1, sizeof *ob);
    if (!ob)
        return TH_E_NOMEM;
    ob->base.ops = &outbox_ops;
    ob->base.name = "outbox";
    ob->base.timeout_ms = 2000; /* the writer's queue, not the network: rarely more than 1 ms */
    if (sink)
        ob->sink = *sink; /* else a provider only checked, never sent through */
    *out = &ob->base;
    return TH_E_OK;
}

const struct th_provider_kind th_provider_outbox = {
    .name = "outbox",
    .create = outbox_new,
};
