//! Reading passwords: from a terminal without echo (after a prompt on standard error), else one
//! line of standard input (so scripts can pipe them in).

use std::io::{BufRead, IsTerminal, Write};

use crate::error::ClientError;

/// One password: `label` is the prompt shown on a terminal.
pub fn password(label: &str) -> Result<String, ClientError> {
    let tty = std::io::stdin().is_terminal();
    let line = if tty {
        hidden_line(label)
    } else {
        plain_line()
    };
    let password = line.map_err(|e| ClientError::Invalid(format!("cannot read {label}: {e}")))?;
    if password.is_empty() {
        return Err(ClientError::Invalid(format!("{label} is empty")));
    }
    Ok(password)
}

/// A new password: on a terminal it is asked twice and both must match.
pub fn new_password(label: &str) -> Result<String, ClientError> {
    let password = password(label)?;
    if std::io::stdin().is_terminal() && self::password(&format!("{label} (again)"))? != password {
        return Err(ClientError::Invalid("the passwords do not match".into()));
    }
    Ok(password)
}

/// One line of standard input without its line end.
fn plain_line() -> std::io::Result<String> {
    line_of(&mut std::io::stdin().lock())
}

/// One line of `input` without its line end; none at all is an error.
fn line_of(input: &mut impl BufRead) -> std::io::Result<String> {
    let mut line = String::new();
    if input.read_line(&mut line)? == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "standard input is empty",
        ));
    }
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

/// A line typed on the terminal with its echo off.
fn hidden_line(label: &str) -> std::io::Result<String> {
    eprint!("{label}: ");
    let _ = std::io::stderr().flush();
    let line = {
        let _quiet = EchoOff::new()?;
        plain_line()
    };
    // The Enter that ended the line was not echoed either.
    eprintln!();
    line
}

/// The terminal on standard input with echo off, restored on drop.
#[cfg(unix)]
struct EchoOff {
    saved: libc::termios,
}

#[cfg(unix)]
impl EchoOff {
    fn new() -> std::io::Result<EchoOff> {
        let mut saved = std::mem::MaybeUninit::<libc::termios>::uninit();
        // SAFETY: tcgetattr fills the termios it is given when it returns 0.
        let saved = unsafe {
            if libc::tcgetattr(libc::STDIN_FILENO, saved.as_mut_ptr()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            saved.assume_init()
        };
        let mut quiet = saved;
        quiet.c_lflag &= !libc::ECHO;
        // SAFETY: a valid termios for the descriptor it was read from.
        if unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &quiet) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(EchoOff { saved })
    }
}

#[cfg(unix)]
impl Drop for EchoOff {
    fn drop(&mut self) {
        // SAFETY: restores the termios read in `new`.
        unsafe {
            libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &self.saved);
        }
    }
}

/// Elsewhere the password is read with echo on.
#[cfg(not(unix))]
struct EchoOff;

#[cfg(not(unix))]
impl EchoOff {
    fn new() -> std::io::Result<EchoOff> {
        Ok(EchoOff)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn piped_passwords_are_read_a_line_at_a_time() {
        let mut input = std::io::Cursor::new("old pw\r\nnew pw\n");
        assert_eq!(super::line_of(&mut input).unwrap(), "old pw");
        assert_eq!(super::line_of(&mut input).unwrap(), "new pw");
        assert!(super::line_of(&mut input).is_err());
    }
}
