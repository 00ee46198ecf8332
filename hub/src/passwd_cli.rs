//! `tern passwd FILE USER`: adds, updates or deletes a user in a password file.
//!
//! The password is read twice from the terminal without echo, or once from standard input
//! with `--password-stdin` (for scripts: `echo "$PW" | tern passwd --password-stdin ...`).
//! The file is rewritten atomically with mode 0600; a running hub picks it up on SIGHUP.

use std::io::BufRead as _;
use std::path::PathBuf;

use anyhow::{Context as _, bail};
use tern_hub::security::password::{PasswdAction, PasswdOutcome, update_file};

/// Arguments of `tern passwd`.
#[derive(Debug, clap::Args)]
pub struct PasswdArgs {
    /// The password file (created if missing).
    file: PathBuf,
    /// The username.
    user: String,
    /// Read the password from the first line of standard input instead of prompting.
    #[arg(long, conflicts_with = "delete")]
    password_stdin: bool,
    /// Remove the user instead of setting a password.
    #[arg(long)]
    delete: bool,
}

/// Runs `tern passwd`.
pub fn passwd(args: &PasswdArgs) -> anyhow::Result<()> {
    let password;
    let action = if args.delete {
        PasswdAction::Delete
    } else {
        password = read_password(args.password_stdin)?;
        PasswdAction::Set(password.as_bytes())
    };
    let outcome = update_file(&args.file, &args.user, action)?;
    let file = args.file.display();
    match outcome {
        PasswdOutcome::Added => println!("added {} to {file}", args.user),
        PasswdOutcome::Updated => println!("updated the password of {} in {file}", args.user),
        PasswdOutcome::Deleted => println!("deleted {} from {file}", args.user),
        PasswdOutcome::NotFound => bail!("{} is not in {file}", args.user),
    }
    Ok(())
}

fn read_password(from_stdin: bool) -> anyhow::Result<String> {
    let password = if from_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("reading the password from standard input")?;
        line.trim_end_matches(['\n', '\r']).to_owned()
    } else {
        if !std::io::IsTerminal::is_terminal(&std::io::stdin()) {
            bail!("standard input is not a terminal: use --password-stdin");
        }
        let first = rpassword::prompt_password("Password: ").context("reading the password")?;
        let second =
            rpassword::prompt_password("Password again: ").context("reading the password")?;
        if first != second {
            bail!("the passwords do not match");
        }
        first
    };
    if password.is_empty() {
        bail!("empty password refused");
    }
    Ok(password)
}
