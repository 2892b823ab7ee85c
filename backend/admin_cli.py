"""`spondyscan admin grant|revoke EMAIL`: make an existing account an admin, or a user again.

Sign-up is open and emails are unverified, so the admin role is granted only here, by someone
with access to the server's settings and database, never from the sign-up form.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from backend.core.config import Settings

log = logging.getLogger(__name__)

ACTIONS = {"grant": "admin", "revoke": "user"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--database-url", help="default: SPONDYSCAN_DATABASE_URL")
    parser.add_argument("--data-dir", help="default: SPONDYSCAN_DATA_DIR or var/")
    sub = parser.add_subparsers(dest="admin_action", required=True, metavar="{grant,revoke}")
    for action, help_text in (
        ("grant", "give an existing account the admin role"),
        ("revoke", "take the admin role away (the account stays, as a user)"),
    ):
        p = sub.add_parser(action, help=help_text, description=help_text)
        p.add_argument("email", help="the account's email, as it signed up")


async def change_role(settings: Settings, email: str, role: str) -> str:
    """Apply migrations, then set ``role`` on the account; return its normalised email."""
    from backend.db import migrate
    from backend.db.session import make_engine, make_sessionmaker
    from backend.services import auth

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    url = settings.resolved_database_url
    if settings.apply_migrations:
        await asyncio.to_thread(migrate.upgrade, url)
    engine = make_engine(url)
    try:
        async with make_sessionmaker(engine)() as session:
            user = await auth.set_role(session, email, role, actor="cli")
            return user.email
    finally:
        await engine.dispose()


def run(args: argparse.Namespace) -> int:
    from backend.core.config import load_settings
    from backend.core.errors import NotFound
    from ml.clierror import CliError

    try:
        settings = load_settings(database_url=args.database_url, data_dir=args.data_dir)
    except ValueError as exc:
        raise CliError(str(exc).splitlines()[-1] if str(exc) else "invalid settings") from exc
    role = ACTIONS[args.admin_action]
    try:
        email = asyncio.run(change_role(settings, args.email, role))
    except NotFound as exc:
        raise CliError(f"{exc.message} Sign up first, then grant the role.") from exc
    print(f"{email} is now {'an admin' if role == 'admin' else 'a user'}.")  # noqa: T201
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="spondyscan admin")
    add_arguments(parser)
    sys.exit(run(parser.parse_args()))
