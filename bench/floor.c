/*
 * bench/floor.c - the floor of an IPVS table dump: the least work any tool must do
 * to read the whole table over generic netlink, to measure lvsctl against.
 *
 * What it does, on one raw NETLINK_GENERIC socket (no libnl, no libmnl):
 *   1. asks the generic netlink controller for the id of the family "IPVS";
 *   2. dumps all services (IPVS_CMD_GET_SERVICE with NLM_F_DUMP);
 *   3. for each service, dumps its destinations (IPVS_CMD_GET_DEST with NLM_F_DUMP
 *      and the service's identity: the service nest echoed back as received);
 *   4. prints "services: N destinations: M", nothing else.
 * No formatting of entries, no parsing beyond what it takes to find the service
 * nest: this is the kernel's cost plus one syscall pair per buffer.
 *
 * Build: gcc -O2 -o floor bench/floor.c   (scripts/bench does it). Run as root in
 * the namespace to read. Exit status 0 on success, 1 on any netlink error.
 */
#include <errno.h>
#include <linux/genetlink.h>
#include <linux/netlink.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* From the kernel's uapi ip_vs.h (values only). */
#define IPVS_GENL_NAME "IPVS"
#define IPVS_GENL_VERSION 1
#define IPVS_CMD_GET_SERVICE 4
#define IPVS_CMD_GET_DEST 8
#define IPVS_CMD_ATTR_SERVICE 1
#define IPVS_CMD_ATTR_DEST 2

#define RXBUF (256 * 1024)

static int sock;
static uint32_t seq;
static unsigned char rx[RXBUF];

/* The service nests of the service dump, kept as raw attribute bytes. */
static unsigned char *svcs;
static size_t svcs_len, svcs_cap;
static unsigned long nsvc, ndest;

static void die(const char *what, int err)
{
	fprintf(stderr, "floor: %s: %s\n", what, strerror(err));
	exit(1);
}

/* A request: nlmsghdr + genlmsghdr + optional attributes (already laid out). */
static void send_req(uint16_t type, uint16_t flags, uint8_t cmd, uint8_t version,
		     const void *attrs, size_t attrs_len)
{
	unsigned char buf[1024];
	struct nlmsghdr *nh = (struct nlmsghdr *)buf;
	struct genlmsghdr *gh = NLMSG_DATA(nh);
	size_t len = NLMSG_LENGTH(GENL_HDRLEN) + attrs_len;

	if (len > sizeof(buf))
		die("request too large", EMSGSIZE);
	memset(buf, 0, NLMSG_LENGTH(GENL_HDRLEN));
	nh->nlmsg_len = len;
	nh->nlmsg_type = type;
	nh->nlmsg_flags = NLM_F_REQUEST | flags;
	nh->nlmsg_seq = ++seq;
	gh->cmd = cmd;
	gh->version = version;
	memcpy(buf + NLMSG_LENGTH(GENL_HDRLEN), attrs, attrs_len);
	if (send(sock, buf, len, 0) != (ssize_t)len)
		die("send", errno);
}

/* Calls on_msg for every reply message until NLMSG_DONE (dump) or the first reply (do). */
static void recv_replies(int dump, void (*on_msg)(struct nlmsghdr *))
{
	for (;;) {
		ssize_t n = recv(sock, rx, sizeof(rx), 0);
		if (n < 0)
			die("recv", errno);
		for (struct nlmsghdr *nh = (struct nlmsghdr *)rx; NLMSG_OK(nh, (size_t)n);
		     nh = NLMSG_NEXT(nh, n)) {
			if (nh->nlmsg_type == NLMSG_DONE)
				return;
			if (nh->nlmsg_type == NLMSG_ERROR) {
				struct nlmsgerr *e = NLMSG_DATA(nh);
				if (e->error == 0 && !dump)
					return;
				die("netlink error", -e->error);
			}
			on_msg(nh);
			if (!dump)
				return;
		}
	}
}

/* Attributes after the genetlink header of a message. */
#define GENL_ATTRS(nh) ((struct nlattr *)((char *)NLMSG_DATA(nh) + GENL_HDRLEN))
#define GENL_ATTRLEN(nh) ((int)(nh)->nlmsg_len - NLMSG_LENGTH(GENL_HDRLEN))
#define NLA_OK(a, len) ((len) >= (int)sizeof(struct nlattr) && (a)->nla_len >= sizeof(struct nlattr) && (a)->nla_len <= (len))
#define NLA_NEXT(a, len) ((len) -= NLA_ALIGN((a)->nla_len), (struct nlattr *)((char *)(a) + NLA_ALIGN((a)->nla_len)))

static uint16_t family;

static void on_ctrl(struct nlmsghdr *nh)
{
	int len = GENL_ATTRLEN(nh);
	for (struct nlattr *a = GENL_ATTRS(nh); NLA_OK(a, len); a = NLA_NEXT(a, len))
		if ((a->nla_type & NLA_TYPE_MASK) == CTRL_ATTR_FAMILY_ID)
			memcpy(&family, (char *)a + NLA_HDRLEN, sizeof(family));
}

/* Keeps each service's nest (header included) to send back as the GET_DEST identity. */
static void on_service(struct nlmsghdr *nh)
{
	int len = GENL_ATTRLEN(nh);
	for (struct nlattr *a = GENL_ATTRS(nh); NLA_OK(a, len); a = NLA_NEXT(a, len)) {
		if ((a->nla_type & NLA_TYPE_MASK) != IPVS_CMD_ATTR_SERVICE)
			continue;
		size_t need = NLA_ALIGN(a->nla_len);
		if (svcs_len + need > svcs_cap) {
			svcs_cap = svcs_cap ? 2 * svcs_cap : 1 << 20;
			svcs = realloc(svcs, svcs_cap);
			if (!svcs)
				die("realloc", ENOMEM);
		}
		memcpy(svcs + svcs_len, a, a->nla_len);
		memset(svcs + svcs_len + a->nla_len, 0, need - a->nla_len);
		svcs_len += need;
		nsvc++;
	}
}

static void on_dest(struct nlmsghdr *nh)
{
	int len = GENL_ATTRLEN(nh);
	for (struct nlattr *a = GENL_ATTRS(nh); NLA_OK(a, len); a = NLA_NEXT(a, len))
		if ((a->nla_type & NLA_TYPE_MASK) == IPVS_CMD_ATTR_DEST)
			ndest++;
}

int main(void)
{
	struct sockaddr_nl kernel = { .nl_family = AF_NETLINK };
	int rcvbuf = 1 << 20;

	sock = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_GENERIC);
	if (sock < 0)
		die("socket", errno);
	setsockopt(sock, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
	if (connect(sock, (struct sockaddr *)&kernel, sizeof(kernel)) < 0)
		die("connect", errno);

	/* 1. family id: CTRL_CMD_GETFAMILY with CTRL_ATTR_FAMILY_NAME "IPVS". */
	unsigned char name[NLA_HDRLEN + NLA_ALIGN(sizeof(IPVS_GENL_NAME))] = { 0 };
	struct nlattr *na = (struct nlattr *)name;
	na->nla_type = CTRL_ATTR_FAMILY_NAME;
	na->nla_len = NLA_HDRLEN + sizeof(IPVS_GENL_NAME);
	memcpy(name + NLA_HDRLEN, IPVS_GENL_NAME, sizeof(IPVS_GENL_NAME));
	send_req(GENL_ID_CTRL, 0, CTRL_CMD_GETFAMILY, 1, name, sizeof(name));
	recv_replies(0, on_ctrl);
	if (!family)
		die("no IPVS family", ENOENT);

	/* 2. all services. */
	send_req(family, NLM_F_DUMP, IPVS_CMD_GET_SERVICE, IPVS_GENL_VERSION, NULL, 0);
	recv_replies(1, on_service);

	/* 3. each service's destinations, one dump at a time (the kernel allows one per socket). */
	for (size_t off = 0; off < svcs_len;) {
		struct nlattr *svc = (struct nlattr *)(svcs + off);
		send_req(family, NLM_F_DUMP, IPVS_CMD_GET_DEST, IPVS_GENL_VERSION, svc,
			 NLA_ALIGN(svc->nla_len));
		recv_replies(1, on_dest);
		off += NLA_ALIGN(svc->nla_len);
	}

	printf("services: %lu destinations: %lu\n", nsvc, ndest);
	return 0;
}
