//! Pseudo-terminal pairs, their window size, and the master side on the
//! async reactor.
//!
//! `unsafe` here is one `ioctl` (TIOCSWINSZ), which nix does not wrap, and
//! tokio's `AsyncFd::register`, whose contract an `OwnedFd` meets.

use std::{
    io,
    os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd},
};

use tokio::io::unix::AsyncFd;

use nix::{
    fcntl::{fcntl, open, FcntlArg, OFlag},
    libc,
    pty::{grantpt, posix_openpt, ptsname_r, unlockpt},
    sys::stat::Mode,
};

/// Both ends of a new pseudo-terminal. Neither is inherited by children
/// (close-on-exec) unless passed on explicitly; the master is non-blocking.
pub(crate) struct Pair {
    pub master: OwnedFd,
    pub slave: OwnedFd,
}

/// Opens a pseudo-terminal of `cols` × `rows`.
pub(crate) fn open_pair(cols: u16, rows: u16) -> io::Result<Pair> {
    let flags = OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC;
    let master = posix_openpt(flags)?;
    grantpt(&master)?;
    unlockpt(&master)?;
    let name = ptsname_r(&master)?;
    let slave = open(name.as_str(), flags, Mode::empty())?;
    let master = OwnedFd::from(master);
    fcntl(
        &master,
        FcntlArg::F_SETFL(OFlag::O_RDWR | OFlag::O_NONBLOCK),
    )?;
    set_size(master.as_fd(), cols, rows)?;
    Ok(Pair { master, slave })
}

/// Registers a (non-blocking) master with the reactor. Must be called
/// inside a tokio runtime.
pub(crate) fn watch(master: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: `register` needs the descriptor to stay open and the same for
    // the life of the `AsyncFd`: it owns the `OwnedFd`, which closes only
    // when dropped and always returns the same descriptor.
    unsafe { AsyncFd::register(master) }.map_err(Into::into)
}

/// Sets the window size; the kernel sends SIGWINCH to the terminal's
/// foreground process group when it changes.
pub(crate) fn set_size(fd: BorrowedFd<'_>, cols: u16, rows: u16) -> io::Result<()> {
    let size = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one `winsize` through the pointer, which
    // points to a live, initialised local; `fd` is open for the whole call
    // (borrowed).
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &size) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size_of(fd: BorrowedFd<'_>) -> (u16, u16) {
        let mut size = libc::winsize {
            ws_row: 0,
            ws_col: 0,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCGWINSZ writes one `winsize` into the live local.
        let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut size) };
        assert_eq!(rc, 0);
        (size.ws_col, size.ws_row)
    }

    #[test]
    fn pair_has_the_requested_size() {
        let pair = open_pair(132, 43).unwrap();
        assert_eq!(size_of(pair.slave.as_fd()), (132, 43));
        set_size(pair.master.as_fd(), 10, 5).unwrap();
        assert_eq!(size_of(pair.slave.as_fd()), (10, 5));
        let flags = fcntl(&pair.master, FcntlArg::F_GETFL).unwrap();
        assert_ne!(flags & libc::O_NONBLOCK, 0);
    }
}
