/*
 * A minimal TCP: one connection at a time, either an active open (connect,
 * send a request, read the reply until FIN or a byte limit, close) or a
 * passive one (accept one connection on a port, send a greeting, close).
 * Our data is at most one segment, sent with the FIN when closing after it;
 * unacknowledged data is resent from snd_una every second. Received data is
 * taken in order only (a segment overlapping rcv_nxt is trimmed, others are
 * answered with a duplicate ACK); the window advertised is fixed, and every
 * segment with data or FIN is acknowledged at once. Segments for no
 * connection get a RST.
 *
 * What fetch reads is summed as 64-bit little-endian words w_k (k = 0, 1,
 * ...; the last one zero-padded): sum = sum of (k + 1) * w_k mod 2^64.
 */
#include "net.h"

#define TH_FIN  0x01
#define TH_SYN  0x02
#define TH_RST  0x04
#define TH_PSH  0x08
#define TH_ACK  0x10
#define WINDOW  16384
#define MSS     1460
#define RTO_US  1000000

enum { CLOSED, LISTEN, SYN_SENT, SYN_RCVD, ESTABLISHED };

static struct tcb {
    int state;
    uint16_t lport, rport;
    uint32_t rip;
    uint8_t rmac[6];
    uint32_t iss, snd_una, snd_nxt, rcv_nxt;
    const uint8_t *data;            /* what we send: at most one segment */
    uint32_t dlen;
    bool passive;                   /* opened by tcp_serve() */
    bool fin_queued, fin_rcvd, reset;
    uint64_t rto_at;
    /* received data */
    bool counting;
    uint64_t rx_bytes, rx_limit;
    uint64_t sum, k, part;
    unsigned part_n;
} tcb;

static bool seq_lt(uint32_t a, uint32_t b) { return (int32_t)(a - b) < 0; }
static bool seq_le(uint32_t a, uint32_t b) { return (int32_t)(a - b) <= 0; }

static void segment(const uint8_t *mac, uint32_t rip, uint16_t lport, uint16_t rport, uint8_t flags, uint32_t seq,
                    uint32_t ack, const uint8_t *data, uint32_t len, bool mss)
{
    uint8_t *f = nic_tx_buf();
    if (!f)
        return;                     /* ring full: the retransmission resends it */
    uint8_t *s = f + ETH_HLEN + 20;
    unsigned hl = mss ? 24 : 20;
    wr16(s, lport);
    wr16(s + 2, rport);
    wr32(s + 4, seq);
    wr32(s + 8, ack);
    s[12] = (uint8_t)((hl / 4) << 4);
    s[13] = flags;
    wr16(s + 14, WINDOW);
    wr16(s + 16, 0);
    wr16(s + 18, 0);
    if (mss) {
        s[20] = 2;
        s[21] = 4;
        wr16(s + 22, MSS);
    }
    if (len)
        memcpy(s + hl, data, len);
    uint16_t c = (uint16_t)~csum_fold(csum_add(csum_pseudo(net.ip, rip, IP_TCP, hl + len), s, hl + len));
    *(uint16_t *)(void *)(s + 16) = c;
    ip_send(f, mac, rip, IP_TCP, hl + len);
}

static void send_ack(struct tcb *t)
{
    segment(t->rmac, t->rip, t->lport, t->rport, TH_ACK, t->snd_nxt, t->rcv_nxt, NULL, 0, false);
}

static bool all_acked(const struct tcb *t)
{
    return t->snd_una == t->snd_nxt;
}

/* (Re)send everything from snd_una: SYN, SYN-ACK, or data and/or FIN. */
static void output(struct tcb *t)
{
    if (t->state == SYN_SENT || t->state == SYN_RCVD) {
        segment(t->rmac, t->rip, t->lport, t->rport, t->state == SYN_SENT ? TH_SYN : TH_SYN | TH_ACK, t->iss,
                t->rcv_nxt, NULL, 0, true);
        t->snd_nxt = t->iss + 1;
    } else if (t->state == ESTABLISHED) {
        uint32_t off = t->snd_una - (t->iss + 1);
        if (off > t->dlen)
            off = t->dlen;
        uint32_t end = t->iss + 1 + t->dlen + (t->fin_queued ? 1 : 0);
        if (seq_lt(t->snd_una, end)) {
            uint8_t flags = TH_ACK | (t->dlen > off ? TH_PSH : 0) | (t->fin_queued ? TH_FIN : 0);
            segment(t->rmac, t->rip, t->lport, t->rport, flags, t->snd_una, t->rcv_nxt, t->data + off,
                    t->dlen - off, false);
        }
        t->snd_nxt = end;
    }
    t->rto_at = net_now_us() + RTO_US;
}

static void deliver(struct tcb *t, const uint8_t *p, uint32_t n)
{
    if (!t->counting || t->rx_bytes >= t->rx_limit)
        return;
    if (n > t->rx_limit - t->rx_bytes)
        n = (uint32_t)(t->rx_limit - t->rx_bytes);
    t->rx_bytes += n;
    while (n && t->part_n) {            /* finish a word begun in an earlier segment */
        t->part |= (uint64_t)*p++ << (8 * t->part_n);
        n--;
        if (++t->part_n == 8) {
            t->sum += t->part * ++t->k;
            t->part = 0;
            t->part_n = 0;
        }
    }
    uint64_t sum = t->sum, k = t->k;
    for (; n >= 8; n -= 8, p += 8)
        sum += *(const uint64_t *)(const void *)p * ++k;
    t->sum = sum;
    t->k = k;
    for (; n; n--)
        t->part |= (uint64_t)*p++ << (8 * t->part_n++);
}

static void rst_reply(const uint8_t *frame, const uint8_t *ip, const uint8_t *s, uint32_t dlen)
{
    uint8_t flags = s[13];
    if (flags & TH_RST)
        return;
    uint32_t seq = rd32(s + 4), ack = rd32(s + 8);
    if (flags & TH_ACK)
        segment(frame + 6, rd32(ip + 12), rd16(s + 2), rd16(s), TH_RST, ack, 0, NULL, 0, false);
    else
        segment(frame + 6, rd32(ip + 12), rd16(s + 2), rd16(s), TH_RST | TH_ACK, 0,
                seq + dlen + (flags & TH_SYN ? 1 : 0) + (flags & TH_FIN ? 1 : 0), NULL, 0, false);
}

void tcp_input(const uint8_t *frame, const uint8_t *ip, const uint8_t *s, unsigned len)
{
    if (len < 20)
        return;
    unsigned doff = (s[12] >> 4) * 4u;
    uint32_t src = rd32(ip + 12);
    if (doff < 20 || doff > len ||
        csum_fold(csum_add(csum_pseudo(src, rd32(ip + 16), IP_TCP, len), s, len)) != 0xffff)
        return;
    struct tcb *t = &tcb;
    uint16_t sport = rd16(s), dport = rd16(s + 2);
    uint32_t seq = rd32(s + 4), ack = rd32(s + 8), dlen = len - doff;
    uint8_t flags = s[13];
    const uint8_t *data = s + doff;
    if (t->state == CLOSED || dport != t->lport ||
        (t->state != LISTEN && (src != t->rip || sport != t->rport))) {
        rst_reply(frame, ip, s, dlen);
        return;
    }
    switch (t->state) {
    case LISTEN:
        if (flags & TH_RST)
            return;
        if ((flags & TH_ACK) || !(flags & TH_SYN)) {
            rst_reply(frame, ip, s, dlen);
            return;
        }
        t->rip = src;
        t->rport = sport;
        for (int i = 0; i < 6; i++)
            t->rmac[i] = frame[6 + i];
        t->rcv_nxt = seq + 1;
        t->iss = (uint32_t)rdtsc();
        t->snd_una = t->iss;
        t->state = SYN_RCVD;
        output(t);
        return;
    case SYN_SENT:
        if ((flags & TH_ACK) && ack != t->iss + 1) {
            rst_reply(frame, ip, s, dlen);
            return;
        }
        if (flags & TH_RST) {
            if (flags & TH_ACK) {
                t->reset = true;
                t->state = CLOSED;
            }
            return;
        }
        if ((flags & TH_SYN) && (flags & TH_ACK)) {
            t->rcv_nxt = seq + 1;
            t->snd_una = t->snd_nxt = ack;
            t->state = ESTABLISHED;
            send_ack(t);
        }
        return;
    }
    /* SYN_RCVD, ESTABLISHED */
    if (flags & TH_RST) {
        if (seq_le(t->rcv_nxt, seq) && seq_lt(seq, t->rcv_nxt + WINDOW)) {
            if (t->state == SYN_RCVD && t->passive) {
                t->state = LISTEN;      /* back to listening, as RFC 793 says */
                return;
            }
            t->reset = true;
            t->state = CLOSED;
        }
        return;
    }
    if (flags & TH_SYN) {
        if (t->state == SYN_RCVD && seq + 1 == t->rcv_nxt)
            output(t);                  /* our SYN-ACK was lost */
        else
            send_ack(t);
        return;
    }
    if (!(flags & TH_ACK))
        return;
    if (seq_lt(t->snd_una, ack) && seq_le(ack, t->snd_nxt)) {
        t->snd_una = ack;
        t->rto_at = net_now_us() + RTO_US;
        if (t->state == SYN_RCVD)
            t->state = ESTABLISHED;
    }
    if (!dlen && !(flags & TH_FIN))
        return;
    if (seq_lt(seq, t->rcv_nxt) && seq_lt(t->rcv_nxt, seq + dlen)) {
        uint32_t skip = t->rcv_nxt - seq;  /* partly new: trim what we have */
        data += skip;
        dlen -= skip;
        seq = t->rcv_nxt;
    }
    if (seq == t->rcv_nxt && !t->fin_rcvd) {
        deliver(t, data, dlen);
        t->rcv_nxt += dlen;
        if (flags & TH_FIN) {
            t->rcv_nxt++;
            t->fin_rcvd = true;
        }
    }
    send_ack(t);                        /* new data, or a duplicate ACK */
}

/* Runs the stack until done(t) or a reset, resending on the timer; false after timeout_us. */
static bool run_until(struct tcb *t, bool (*done)(const struct tcb *), uint64_t timeout_us)
{
    uint64_t deadline = net_now_us() + timeout_us;
    while (!done(t) && !t->reset) {
        uint64_t now = net_now_us();
        if (now >= deadline)
            return false;
        if (!all_acked(t) && now >= t->rto_at)
            output(t);
        net_wait();
    }
    return !t->reset;
}

static bool is_established(const struct tcb *t) { return t->state == ESTABLISHED; }
static bool read_done(const struct tcb *t) { return t->fin_rcvd || t->rx_bytes >= t->rx_limit; }
static bool closed(const struct tcb *t) { return t->fin_rcvd && all_acked(t); }

static void endpoint(char *out, uint32_t ip, uint16_t port)
{
    fmt_ip(out, ip);
    ksnprintf(out + strlen(out), 8, ":%u", port);
}

bool tcp_fetch(const char *prefix, uint32_t ip, uint16_t port, const char *req, uint64_t limit, uint64_t timeout_us,
               uint64_t *bytes, uint64_t *sum)
{
    struct tcb *t = &tcb;
    char ep[24];
    endpoint(ep, ip, port);
    memset(t, 0, sizeof(*t));
    if (!arp_resolve(ip, t->rmac, timeout_us)) {
        kprintf("%s: fetch FAILED no route to %s\n", prefix, ep);
        return false;
    }
    uint64_t tsc = rdtsc();
    t->rip = ip;
    t->rport = port;
    t->lport = (uint16_t)(49152 + ((tsc >> 8) & 0x3fff));
    t->iss = (uint32_t)tsc;
    t->snd_una = t->iss;
    t->data = (const uint8_t *)req;
    t->dlen = (uint32_t)strlen(req);
    t->counting = true;
    t->rx_limit = limit;
    t->state = SYN_SENT;
    output(t);
    bool ok = run_until(t, is_established, timeout_us);
    if (!ok) {
        kprintf("%s: fetch FAILED %s %s\n", prefix, t->reset ? "refused by" : "no answer from", ep);
        t->state = CLOSED;
        return false;
    }
    kprintf("%s: connected to %s\n", prefix, ep);
    output(t);                          /* the request */
    ok = run_until(t, read_done, timeout_us);
    if (!ok) {
        kprintf("%s: fetch FAILED %s after %lu bytes\n", prefix, t->reset ? "reset" : "timeout", t->rx_bytes);
        if (!t->reset)
            segment(t->rmac, t->rip, t->lport, t->rport, TH_RST | TH_ACK, t->snd_nxt, t->rcv_nxt, NULL, 0, false);
        t->state = CLOSED;
        return false;
    }
    t->fin_queued = true;               /* close: our FIN (after the request, if still unacked) */
    output(t);
    if (!run_until(t, closed, 5000000) && !t->reset)
        segment(t->rmac, t->rip, t->lport, t->rport, TH_RST | TH_ACK, t->snd_nxt, t->rcv_nxt, NULL, 0, false);
    t->state = CLOSED;
    if (t->part_n)
        t->sum += t->part * ++t->k;
    *bytes = t->rx_bytes;
    *sum = t->sum;
    return true;
}

bool tcp_serve(const char *prefix, uint16_t port, const char *greeting, uint64_t timeout_us)
{
    struct tcb *t = &tcb;
    memset(t, 0, sizeof(*t));
    t->lport = port;
    t->passive = true;
    t->data = (const uint8_t *)greeting;
    t->dlen = (uint32_t)strlen(greeting);
    t->state = LISTEN;
    kprintf("%s: serving port=%u\n", prefix, port);
    bool ok = run_until(t, is_established, timeout_us);
    if (!ok) {
        kprintf("%s: serve FAILED %s\n", prefix, t->reset ? "reset" : "timeout");
        t->state = CLOSED;
        return false;
    }
    char ep[24];
    endpoint(ep, t->rip, t->rport);
    kprintf("%s: accepted from %s\n", prefix, ep);
    t->fin_queued = true;               /* the greeting, then close */
    output(t);
    ok = run_until(t, closed, timeout_us);
    if (!ok)
        kprintf("%s: serve FAILED %s while closing\n", prefix, t->reset ? "reset" : "timeout");
    t->state = CLOSED;
    return ok;
}
