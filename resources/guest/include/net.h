/* Petrel test guest: virtio-net driver and the small network stack
 * (virtio_net.c, net.c, net_tcp.c, net_*.c). See ../README.md. */
#ifndef PETREL_NET_H
#define PETREL_NET_H

#include "petrel.h"

/* ---- byte order (frames are big endian) ---- */
static inline uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static inline uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static inline void wr16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v; }
static inline void wr32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16); p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v;
}

/* ---- virtio_net.c: the NIC ---- */
#define NET_HDR_LEN     12          /* struct virtio_net_hdr with num_buffers (VERSION_1) */
#define NET_BUF_LEN     2048        /* each rx buffer and tx slot */
#define ETH_HLEN        14
#define ETH_ZLEN        60          /* shortest frame (without FCS): shorter ones are padded */
#define ETH_FRAME_MAX   1514
#define REASM_MAX       16384       /* largest frame accepted across merged rx buffers */

#define NET_F_MAC       (1ULL << 5)
#define NET_F_MRG_RXBUF (1ULL << 15)
#define NET_F_STATUS    (1ULL << 16)
#define NET_F_CTRL_VQ   (1ULL << 17)
#define NET_F_CTRL_RX   (1ULL << 18)

#define NET_RXQ         0
#define NET_TXQ         1
#define NET_CTRLQ       2

struct nic {
    bool up;                        /* nic_open() succeeded */
    uint8_t mac[6];
    bool link_up;
    bool mrg;                       /* MRG_RXBUF negotiated */
    bool ctrl;                      /* CTRL_VQ and CTRL_RX negotiated */
    uint8_t *rx_area, *tx_area, *reasm;
    unsigned rx_bufs, rx_len, tx_slots;  /* rx buffers of rx_len bytes, 2 KiB apart */
    unsigned tx_nfree;
    uint16_t tx_free[VQ_MAX];       /* free tx slots (a stack) */
    bool tx_posted, rx_posted;      /* posted since the last notify */
    unsigned reasm_left;            /* merged rx buffers still to come for the frame in reasm */
    uint32_t reasm_len;
    bool reasm_drop;
    uint32_t link_changes;          /* status changes seen (config interrupts with a new LINK_UP) */
    uint32_t cfg_seen, irq_seen;
    uint64_t cfg_poll_us;           /* polled mode: next ISR read */
    uint32_t rx_frames, rx_merged, rx_bad, tx_frames;   /* merged: frames that spanned rx buffers */
};
extern struct nic nic;
extern struct virtio_dev vnet;
bool nic_open(void);                /* find, init, post rx buffers; prints "net: mac=... link=..." */
void nic_close(void);               /* watchdog off, device reset */
unsigned nic_poll(void);            /* rx frames to net_input(), tx completions, link status; events handled */
void nic_sleep(void);               /* wait for an interrupt or the 10 ms watchdog (polled: spin a while) */
uint8_t *nic_tx_buf(void);          /* a free tx slot's frame area, NULL when the ring stays full */
void nic_tx(uint8_t *frame, unsigned len);  /* post a frame from nic_tx_buf() (padded to ETH_ZLEN) */
void nic_tx_flush(void);            /* notify for what was posted */
void nic_tx_reclaim(void);          /* pop tx completions */
bool nic_read_link(void);           /* LINK_UP from the config space (true without STATUS) */
/* Control queue command: class, command, up to two read-only data parts in
 * their own descriptors; true when the device acked VIRTIO_NET_OK. */
bool nic_ctrl(uint8_t cls, uint8_t cmd, const void *d1, uint32_t l1, const void *d2, uint32_t l2);

/* ---- net.c: Ethernet, ARP, IPv4, ICMP, UDP, DHCP ---- */
#define IP_ICMP         1
#define IP_TCP          6
#define IP_UDP          17
#define ARP_CACHE       8

struct net {
    uint32_t ip, mask, gw, dns, server, lease_secs;   /* host byte order; 0: none */
    uint64_t tsc0;
    uint64_t tsc_khz;               /* from timer_calibrate_tsc() */
    const char *tsc_source;
    uint64_t timeout_us;            /* petrel.net.timeout */
    struct { uint32_t ip; uint8_t mac[6]; } arp[ARP_CACHE];
    unsigned arp_next;
    uint16_t ip_id;
    uint32_t arp_answered, echo_answered;
    uint32_t rx_unicast, rx_multicast, rx_broadcast, rx_foreign;
    /* ping (ICMP echo) client */
    uint16_t ping_id;
    uint32_t ping_replies;          /* echo replies with ping_id */
    uint16_t ping_last_seq;
    uint32_t ping_last_from;
    uint64_t ping_last_us;          /* when the last one came */
    /* DHCP client */
    bool dhcp_active;
    uint32_t dhcp_xid;
    int dhcp_state;
    uint32_t dhcp_offer, dhcp_offer_server;
};
extern struct net net;
extern const uint8_t mac_bcast[6];

void net_init(void);                /* state, petrel.net.timeout, the TSC calibrated (100 ms) */
uint64_t net_now_us(void);
void net_wait(void);                /* handle what arrived, else sleep once (at most about 10 ms) */
void net_input(uint8_t *frame, unsigned len);
bool net_same_subnet(uint32_t ip);
bool arp_lookup(uint32_t ip, uint8_t mac[6]);
/* ARP for the next hop of ip (the gateway off the subnet), one request per
 * second, until timeout; prints "net: arp <ip> is <mac>". */
bool arp_resolve(uint32_t ip, uint8_t mac[6], uint64_t timeout_us);
/* Frame building: payload at frame + ETH_HLEN + 20 (+ 8 for UDP). */
void eth_hdr(uint8_t *frame, const uint8_t dst[6], uint16_t type);
void ip_hdr(uint8_t *ip, uint32_t src, uint32_t dst, uint8_t proto, unsigned payload_len);
void ip_send(uint8_t *frame, const uint8_t dst_mac[6], uint32_t dst, uint8_t proto, unsigned payload_len);
void udp_send(uint8_t *frame, const uint8_t dst_mac[6], uint32_t src, uint32_t dst, uint16_t sport, uint16_t dport,
              unsigned len);
bool icmp_echo_send(const uint8_t dst_mac[6], uint32_t dst, uint16_t id, uint16_t seq);
/* Internet checksum: csum_add() accumulates (native word order, any length
 * for the last part), csum_fold() folds to 16 bits (store it natively). */
uint64_t csum_add(uint64_t sum, const void *p, size_t n);
uint16_t csum_fold(uint64_t sum);
uint64_t csum_pseudo(uint32_t src, uint32_t dst, uint8_t proto, unsigned len);
/* DHCP: DISCOVER/OFFER/REQUEST/ACK; fills net.ip/mask/gw/dns/server/lease_secs. */
bool dhcp_run(const char *prefix, uint64_t timeout_us);

/* ---- net_tcp.c: one TCP connection at a time ---- */
void tcp_input(const uint8_t *frame, const uint8_t *ip, const uint8_t *tcp, unsigned len);
/* Active open to ip:port, send `req`, read until FIN or `limit` bytes:
 * byte count and word sum (see net_tcp.c) of what was read; false after a
 * FAILED line. */
bool tcp_fetch(const char *prefix, uint32_t ip, uint16_t port, const char *req, uint64_t limit,
               uint64_t timeout_us, uint64_t *bytes, uint64_t *sum);
/* Passive open on port: accept one connection, send `greeting`, close. */
bool tcp_serve(const char *prefix, uint16_t port, const char *greeting, uint64_t timeout_us);

/* ---- net_scenarios.c ---- */
void fmt_ip(char *out, uint32_t ip);        /* 16 bytes */
void fmt_mac(char *out, const uint8_t mac[6]);  /* 18 bytes */
bool net_up(bool ip_required);  /* net_init, nic_open, petrel.net.ip (static, dhcp; default dhcp if required) */
bool opt_endpoint(const char *key, uint32_t *ip, uint16_t *port);      /* IP:PORT; false: absent */
uint64_t opt_range(const char *key, uint64_t def, uint64_t min, uint64_t max);  /* panics outside */

#endif
