"""A tenant's users and invitations (admin scope): list users, change a role or disable an
account, invite a new user (the link is shown once), list and revoke pending invites. The work
is done by ``bot_gateway.services.accounts``."""

from __future__ import annotations

from urllib.parse import urlencode

from fastapi import APIRouter, Response

from bot_gateway.deps import AdminDep, SessionDep
from bot_gateway.schemas import (
    InviteCreate,
    InviteCreated,
    InviteList,
    InvitePublic,
    UserList,
    UserPublic,
    UserUpdate,
)
from bot_gateway.services import accounts

router = APIRouter(prefix="/users", tags=["users"])

ACCEPT_PAGE = "/studio/accept-invite"


@router.get("", response_model=UserList)
def list_users(principal: AdminDep, session: SessionDep) -> UserList:
    """Every user of the tenant (every role, disabled ones too), by username."""
    return UserList(
        users=[UserPublic.of(u) for u in accounts.list_users(session, principal.tenant_id)]
    )


@router.patch("/{user_id}", response_model=UserPublic)
def update_user(
    user_id: str, body: UserUpdate, principal: AdminDep, session: SessionDep
) -> UserPublic:
    """Change a user's role, or disable (``true``: their sessions end) or enable the account;
    ``409`` when it would leave the tenant without an active admin."""
    user = accounts.update_user(
        session, principal.tenant_id, user_id, role=body.role, disabled=body.disabled
    )
    return UserPublic.of(user)


@router.post("/invites", status_code=201, response_model=InviteCreated)
def create_invite(body: InviteCreate, principal: AdminDep, session: SessionDep) -> InviteCreated:
    """Invite a user: the answer's ``url`` (with its ``token``, shown once) lets them choose a
    password and sign in, within 7 days. ``409`` when the username is taken or invited."""
    new = accounts.create_invite(
        session,
        tenant_id=principal.tenant_id,
        username=body.username,
        role=body.role,
        name=body.name,
        created_by=principal.actor,
    )
    return InviteCreated(
        invite=InvitePublic.of(new.record),
        token=new.token,
        url=f"{ACCEPT_PAGE}?{urlencode({'token': new.token})}",
    )


@router.get("/invites", response_model=InviteList)
def list_invites(principal: AdminDep, session: SessionDep) -> InviteList:
    """The pending invites (not accepted, not expired), oldest first."""
    return InviteList(
        invites=[InvitePublic.of(i) for i in accounts.list_invites(session, principal.tenant_id)]
    )


@router.delete("/invites/{invite_id}", status_code=204, response_class=Response)
def revoke_invite(invite_id: str, principal: AdminDep, session: SessionDep) -> Response:
    """Revoke an invite: its link stops working."""
    accounts.revoke_invite(session, principal.tenant_id, invite_id)
    return Response(status_code=204)
