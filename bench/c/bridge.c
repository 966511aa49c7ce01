/* Minimal C learning bridge of tap devices for the benchmark: the baseline `br` is held to.
 *   bridge [-l] [-v] TAP@NS TAP@NS [TAP@NS ...]
 * Creates one tap per port inside the named namespace (setns, then /dev/net/tun; the fd keeps
 * working whatever namespace the process is in) and switches frames between them: one thread,
 * poll() over every port, each ready port drained (up to BURST frames) with one read(2) and one
 * write(2) per frame and destination. -l learns source addresses (a keyed hash table with
 * ageing; unknown unicast, broadcast and multicast flood to every other port); without it every
 * frame floods. -v opens the taps with IFF_VNET_HDR and TUNSETOFFLOAD(CSUM|TSO4|TSO6|TSO_ECN):
 * GSO super-frames pass through with their virtio-net header, byte for byte. Frames with a
 * multicast or zero source, to 01:80:C2:00:00:0X, or shorter than an Ethernet header are
 * dropped. The taps are left down: the caller addresses them and brings them up. Prints
 * "ready" once every tap exists; runs until killed (the taps go with the process). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <poll.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#define MAX_PORTS 16
#define BURST 64                 /* frames read from one port before the next is served */
#define VNET_HDR 10              /* struct virtio_net_hdr */
#define TABLE (1u << 12)         /* learning table slots (power of two) */
#define PROBE 8                  /* slots an address may sit in: its hash and the next 7 */
#define AGEING 300               /* seconds an idle address stays learned */

static int nports, vnet, learn;
static struct pollfd pfd[MAX_PORTS];

/* The learning table: open addressing over a window of PROBE slots; slots are never emptied
 * (an entry is overwritten in place when it has aged out or is evicted), so an empty slot ends
 * a search. mac is the 48-bit address + 1 (0 = empty). */
static struct entry { uint64_t mac; uint32_t seen; int32_t port; } table[TABLE];
static uint64_t seed;
static uint32_t now;

static uint32_t slot_of(uint64_t mac) {
    uint64_t h = (mac ^ seed) * 0x9E3779B97F4A7C15ull;
    h ^= h >> 29;
    h *= 0xBF58476D1CE4E5B9ull;
    return (uint32_t)(h >> 40) & (TABLE - 1);
}

static int live(const struct entry *e) { return now - e->seen <= AGEING; }

static int lookup(uint64_t mac) {
    uint32_t h = slot_of(mac);
    for (int i = 0; i < PROBE; i++) {
        struct entry *e = &table[(h + i) & (TABLE - 1)];
        if (e->mac == 0) return -1;
        if (e->mac == mac) return live(e) ? e->port : -1;
    }
    return -1;
}

/* Learn (or refresh, or move) mac on port. A full window gives up its stalest entry. */
static void update(uint64_t mac, int port) {
    uint32_t h = slot_of(mac);
    struct entry *free = NULL, *oldest = NULL;
    for (int i = 0; i < PROBE; i++) {
        struct entry *e = &table[(h + i) & (TABLE - 1)];
        if (e->mac == mac) { e->seen = now; e->port = port; return; }
        if (e->mac == 0) { if (!free) free = e; break; }
        if (!live(e) && !free) free = e;
        if (!oldest || now - e->seen > now - oldest->seen) oldest = e;
    }
    struct entry *e = free ? free : oldest;
    e->mac = mac; e->seen = now; e->port = port;
}

static uint64_t mac_at(const unsigned char *p) {
    uint64_t m = 0;
    for (int i = 0; i < 6; i++) m = m << 8 | p[i];
    return m + 1;
}

static void die(const char *what) { perror(what); exit(1); }

/* A new tap named dev inside namespace ns (/run/netns/ns), non-blocking. */
static int open_tap(const char *ns, const char *dev) {
    char path[300];
    snprintf(path, sizeof path, "/run/netns/%s", ns);
    int nsfd = open(path, O_RDONLY | O_CLOEXEC);
    if (nsfd < 0 || setns(nsfd, CLONE_NEWNET) < 0) die(path);
    close(nsfd);
    int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) die("/dev/net/tun");
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    strncpy(ifr.ifr_name, dev, IFNAMSIZ - 1);
    ifr.ifr_flags = IFF_TAP | IFF_NO_PI | (vnet ? IFF_VNET_HDR : 0);
    if (ioctl(fd, TUNSETIFF, &ifr) < 0) die("TUNSETIFF");
    if (vnet) {
        int size = VNET_HDR;
        if (ioctl(fd, TUNSETVNETHDRSZ, &size) < 0) die("TUNSETVNETHDRSZ");
        if (ioctl(fd, TUNSETOFFLOAD, TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN) < 0)
            die("TUNSETOFFLOAD");
    }
    return fd;
}

static void send_to(int port, const unsigned char *buf, size_t n) {
    /* A full or gone port loses the frame, as a switch port would. */
    (void)!write(pfd[port].fd, buf, n);
}

static void frame(int in, const unsigned char *buf, size_t n) {
    size_t off = vnet ? VNET_HDR : 0;
    if (n < off + 14) return;
    const unsigned char *dst = buf + off, *src = dst + 6;
    if ((src[0] & 1) || !(src[0] | src[1] | src[2] | src[3] | src[4] | src[5])) return;
    if (dst[0] == 0x01 && dst[1] == 0x80 && dst[2] == 0xC2 && dst[3] == 0 && dst[4] == 0 &&
        (dst[5] & 0xF0) == 0)
        return;
    if (learn) {
        update(mac_at(src), in);
        if (!(dst[0] & 1)) {
            int out = lookup(mac_at(dst));
            if (out == in) return;
            if (out >= 0) { send_to(out, buf, n); return; }
        }
    }
    for (int p = 0; p < nports; p++)
        if (p != in) send_to(p, buf, n);
}

int main(int argc, char **argv) {
    int opt;
    while ((opt = getopt(argc, argv, "lv")) != -1) {
        if (opt == 'l') learn = 1;
        else if (opt == 'v') vnet = 1;
        else goto usage;
    }
    nports = argc - optind;
    if (nports < 2 || nports > MAX_PORTS) goto usage;
    int home = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
    if (home < 0) die("/proc/self/ns/net");
    for (int p = 0; p < nports; p++) {
        char dev[IFNAMSIZ];
        const char *spec = argv[optind + p], *at = strchr(spec, '@');
        if (!at || at == spec || at - spec >= IFNAMSIZ || !at[1]) goto usage;
        snprintf(dev, sizeof dev, "%.*s", (int)(at - spec), spec);
        pfd[p].fd = open_tap(at + 1, dev);
        pfd[p].events = POLLIN;
    }
    if (setns(home, CLONE_NEWNET) < 0) die("setns back");
    close(home);
    if (getrandom(&seed, sizeof seed, 0) != sizeof seed) die("getrandom");
    printf("ready\n");
    fflush(stdout);

    static unsigned char buf[VNET_HDR + 65536 + 64];
    for (;;) {
        if (poll(pfd, (nfds_t)nports, -1) < 0) {
            if (errno == EINTR) continue;
            die("poll");
        }
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
        now = (uint32_t)ts.tv_sec;
        for (int p = 0; p < nports; p++) {
            if (pfd[p].revents & (POLLERR | POLLHUP | POLLNVAL)) {
                /* Deleted from outside: poll no more (writes to it then fail harmlessly). */
                fprintf(stderr, "bridge: port %d gone\n", p);
                close(pfd[p].fd);
                pfd[p].fd = -1;
                continue;
            }
            if (!(pfd[p].revents & POLLIN)) continue;
            for (int k = 0; k < BURST; k++) {
                ssize_t n = read(pfd[p].fd, buf, sizeof buf);
                if (n <= 0) break;
                frame(p, buf, (size_t)n);
            }
        }
    }
usage:
    fprintf(stderr, "usage: bridge [-l] [-v] TAP@NETNS TAP@NETNS [TAP@NETNS ...]\n");
    return 2;
}
