//! Processes the tests start (tansu, the bridge binary, Prometheus) die with
//! the test binary, whatever ends it: a normal exit (a `static` broker is
//! never dropped), a panic, an abort or a SIGKILL.
//!
//! Each child asks the kernel for SIGKILL when its parent goes away
//! (`PR_SET_PDEATHSIG`). The kernel means the parent *thread*, and a test's
//! thread ends with the test, so every child is forked from one spawner
//! thread that lives as long as the process.
//!
//! Each child also carries `FKB_TEST_RUN` from the environment, even when its
//! environment is otherwise cleared, so that `tests/run.sh` can check at the
//! end that no process it started is left.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};

type Request = (Command, mpsc::Sender<io::Result<Child>>);

/// Starts `cmd` tied to the life of this test process.
pub fn spawn(mut cmd: Command) -> io::Result<Child> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<Request>>> = OnceLock::new();
    if let Ok(run) = std::env::var("FKB_TEST_RUN") {
        cmd.env("FKB_TEST_RUN", run);
    }
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: between fork and exec only async-signal-safe calls (prctl,
    // getppid) are made, and nothing is allocated.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died before the prctl took effect.
            if libc::getppid() != parent {
                return Err(io::Error::other("the test process is gone"));
            }
            Ok(())
        });
    }
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("child-spawner".into())
            .spawn(move || {
                // Keeps running (blocked on recv) until the process exits,
                // since the sender lives in a static.
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("spawner thread");
        Mutex::new(tx)
    });
    let (reply, answer) = mpsc::channel();
    spawner
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .send((cmd, reply))
        .map_err(|_| io::Error::other("spawner thread gone"))?;
    answer
        .recv()
        .map_err(|_| io::Error::other("spawner thread gone"))?
}
