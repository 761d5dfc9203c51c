# Guest script for scripts/vm-run: records what ipvsadm 1.31 sends to the kernel
# and what the kernel (Debian 6.1) answers, as strace hex dumps, for the golden
# byte tests in ipvs-sys/tests/golden.rs.
#
#   scripts/vm-run --log /tmp/capture.log ipvs-sys/tests/data/capture.sh
#
# Every command runs under
#   strace -f -x -s 65536 -e trace=sendmsg,sendto,recvmsg,recvfrom -e write=all -e read=all
# so each sendmsg/recvmsg is followed by a full hex dump of its data (" | 00000  ..." lines).
ipvsadm --version
st() {
	echo "@@CAPTURE-BEGIN $*@@"
	strace -f -x -s 65536 -e trace=sendmsg,sendto,recvmsg,recvfrom -e write=all -e read=all ipvsadm "$@" 2>&1
	echo "@@CAPTURE-END@@"
}
ip link add dummy0 type dummy
ip link set dummy0 up
ip addr add 10.0.0.254/24 dev dummy0
ip -6 addr add 2001:db8::fe/64 dev dummy0 nodad
st -A -t 10.0.0.1:80 -s rr
st -a -t 10.0.0.1:80 -r 10.0.0.2:80 -g -w 1
st -A -f 5 -6 -s wlc -p 300 -M 64
st -A -u 10.0.0.1:53 -s sh -b sh-port,sh-fallback -o
st -a -u 10.0.0.1:53 -r 10.0.0.3:5353 -m -w 3 -x 100 -y 10
st -A -t 10.0.0.1:8080 -s rr
st -a -t 10.0.0.1:8080 -r 10.0.0.4:8080 -i --tun-type gue --tun-port 6080 --tun-csum -w 2
st -a -t 10.0.0.1:8080 -r 10.0.0.5:8080 -i --tun-type gre --tun-remcsum -w 0
st -A -t [2001:db8::1]:443 -s mh -b mh-port -p 60 -M 128 --pe sip
st -D -t 10.0.0.1:80
st -Z
st --set 1000 100 200
st -Ln
st -Ln --stats --exact
st -Sn
st -L --timeout
st --start-daemon master --mcast-interface dummy0 --syncid 7
st -L --daemon
st -C
