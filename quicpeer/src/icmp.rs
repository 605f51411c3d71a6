//! ICMP errors on Linux: which destinations the network declared unreachable, for any driver.
//!
//! A dial to an address where nothing listens otherwise waits for the handshake timeout.
//! With `IP_RECVERR`/`IPV6_RECVERR` the kernel queues the ICMP errors our datagrams drew on the
//! socket's error queue (and reports `EPOLLERR`); each names the destination of the datagram
//! that failed, which the driver hands to [`SansIo::handle_unreachable`](crate::SansIo::handle_unreachable).
//! The machine decides what an error is worth (the manager only fails handshakes on it, as ICMP
//! can be forged).
//!
//! The mio driver uses it; another driver (tokio, say) calls [`enable`] once on its socket and
//! [`read`] until `WouldBlock` whenever the socket reports an error (feature `icmp`, which `mio`
//! includes).

use std::io;
use std::mem::size_of;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd};

use socket2::SockAddr;

/// Asks the kernel to queue the ICMP errors of `socket`'s datagrams on its error queue.
pub fn enable(socket: &impl AsFd, ipv6: bool) -> io::Result<()> {
    let fd = socket.as_fd().as_raw_fd();
    let (level, name) = if ipv6 {
        (libc::IPPROTO_IPV6, libc::IPV6_RECVERR)
    } else {
        (libc::IPPROTO_IP, libc::IP_RECVERR)
    };
    let on: libc::c_int = 1;
    // SAFETY: `fd` is an open socket; the option value is a c_int of the size given.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&on as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Takes one error off `socket`'s queue: `Ok(Some(destination))` if it says the destination is
/// unreachable, `Ok(None)` for any other error, `Err(WouldBlock)` once the queue is empty.
pub fn read(socket: &impl AsFd) -> io::Result<Option<SocketAddr>> {
    let fd = socket.as_fd().as_raw_fd();
    // The payload of the failed datagram is not needed; a short buffer truncates it.
    let mut payload = [0u8; 64];
    // u64s keep the control buffer aligned for `cmsghdr`.
    let mut control = [0u64; 64];
    let mut unreachable = false;
    // SAFETY: every pointer handed to recvmsg points into a live local buffer of the length
    // given with it; control messages are walked with the CMSG_* helpers within
    // `msg_controllen`, and their data is read unaligned only when long enough.
    let ((), addr) = unsafe {
        SockAddr::try_init(|storage, len| {
            let mut iov = libc::iovec {
                iov_base: payload.as_mut_ptr().cast(),
                iov_len: payload.len(),
            };
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_name = storage.cast();
            msg.msg_namelen = *len;
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = size_of::<[u64; 64]>() as _;
            if libc::recvmsg(fd, &mut msg, libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT) < 0 {
                return Err(io::Error::last_os_error());
            }
            *len = msg.msg_namelen;
            let needed = libc::CMSG_LEN(size_of::<libc::sock_extended_err>() as u32) as usize;
            let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
            while !cmsg.is_null() {
                let header = &*cmsg;
                let is_error = (header.cmsg_level == libc::IPPROTO_IP
                    && header.cmsg_type == libc::IP_RECVERR)
                    || (header.cmsg_level == libc::IPPROTO_IPV6
                        && header.cmsg_type == libc::IPV6_RECVERR);
                if is_error && header.cmsg_len as usize >= needed {
                    let error = std::ptr::read_unaligned(
                        libc::CMSG_DATA(cmsg).cast::<libc::sock_extended_err>(),
                    );
                    let from_icmp = error.ee_origin == libc::SO_EE_ORIGIN_ICMP
                        || error.ee_origin == libc::SO_EE_ORIGIN_ICMP6;
                    let errno = i32::try_from(error.ee_errno).unwrap_or(0);
                    if from_icmp
                        && matches!(
                            errno,
                            libc::ECONNREFUSED | libc::EHOSTUNREACH | libc::ENETUNREACH
                        )
                    {
                        unreachable = true;
                    }
                }
                cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
            }
            Ok(())
        })?
    };
    Ok(addr.as_socket().filter(|_| unreachable))
}
