/* Minimal C tun forwarder for the benchmark: the syscall limit.
 *   forward [--vnet] NS_A DEV_A NS_B DEV_B
 * Attaches to two existing tun devices (one in each named namespace), then copies packets
 * both ways, one thread per direction, one read(2) and one write(2) per packet. With --vnet
 * both are opened with IFF_VNET_HDR and TUNSETOFFLOAD(CSUM|TSO4|TSO6): GSO super-packets pass
 * through untouched, header included. Prints "ready" once attached; runs until killed. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

/* Linux 6.2 UAPI; older headers (Debian 12's) lack them. */
#ifndef TUN_F_USO4
#define TUN_F_USO4 0x20
#define TUN_F_USO6 0x40
#endif

static int vnet;

static int attach(const char *ns, const char *dev) {
    char path[256];
    snprintf(path, sizeof path, "/run/netns/%s", ns);
    int nsfd = open(path, O_RDONLY | O_CLOEXEC);
    if (nsfd < 0 || setns(nsfd, CLONE_NEWNET) < 0) { perror(path); exit(1); }
    close(nsfd);
    int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
    if (fd < 0) { perror("/dev/net/tun"); exit(1); }
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    strncpy(ifr.ifr_name, dev, IFNAMSIZ - 1);
    ifr.ifr_flags = IFF_TUN | IFF_NO_PI | (vnet ? IFF_VNET_HDR : 0);
    if (ioctl(fd, TUNSETIFF, &ifr) < 0) { perror("TUNSETIFF"); exit(1); }
    /* The same mask as the other offload contenders: USO where the kernel has it. */
    if (vnet && ioctl(fd, TUNSETOFFLOAD, TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_USO4 | TUN_F_USO6) < 0 &&
        ioctl(fd, TUNSETOFFLOAD, TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6) < 0) {
        perror("TUNSETOFFLOAD"); exit(1);
    }
    return fd;
}

struct pair { int from, to; };

static void *pump(void *arg) {
    struct pair *p = arg;
    static __thread char buf[65536 + 64];
    for (;;) {
        ssize_t n = read(p->from, buf, sizeof buf);
        if (n <= 0) continue;
        (void)!write(p->to, buf, (size_t)n);
    }
    return NULL;
}

int main(int argc, char **argv) {
    int i = 1;
    if (argc > 1 && strcmp(argv[1], "--vnet") == 0) { vnet = 1; i++; }
    if (argc - i != 4) { fprintf(stderr, "usage: forward [--vnet] NS_A DEV_A NS_B DEV_B\n"); return 2; }
    int a = attach(argv[i], argv[i + 1]);
    int b = attach(argv[i + 2], argv[i + 3]);
    struct pair ab = {a, b}, ba = {b, a};
    pthread_t t1, t2;
    pthread_create(&t1, NULL, pump, &ab);
    pthread_create(&t2, NULL, pump, &ba);
    printf("ready\n");
    fflush(stdout);
    pthread_join(t1, NULL);
    return 0;
}
