"""Portal links: an organization (or the admin, for any organization) asks for a single-use portal URL.

``POST /v1/portal-links`` with the organization's API key returns the URL of a signed,
single-use token; ``POST /v1/portal-links/revoke`` ends every link and session of a session id.
"""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, Depends, Request

from control.api.admin import OrganizationId
from control.api.auth import organization, require_admin, store_of
from control.api.schemas import PortalLinkIn, PortalLinkOut, PortalRevoked, PortalRevokeIn
from control.portal.access import create_link
from control.portal.links import capabilities_of
from publisher.store import Store

router = APIRouter(prefix="/v1", tags=["portal links"])


async def _link(request: Request, store: Store, org: str, body: PortalLinkIn) -> PortalLinkOut:
    issued = await create_link(store, request.app.state.settings.portal, str(request.base_url), org,
                               capabilities_of(body.capabilities), timedelta(hours=body.expiry_hours),
                               body.session_id)
    return PortalLinkOut(url=issued.url, expires_at=issued.expires_at, capabilities=issued.capabilities,
                         session_id=issued.session_id)


@router.post("/portal-links", status_code=201, response_model=PortalLinkOut)
async def create_portal_link(request: Request, body: PortalLinkIn, org: str = Depends(organization),
                             store: Store = Depends(store_of)) -> PortalLinkOut:
    return await _link(request, store, org, body)


@router.post("/portal-links/revoke", response_model=PortalRevoked)
async def revoke_portal_session(body: PortalRevokeIn, org: str = Depends(organization),
                                store: Store = Depends(store_of)) -> PortalRevoked:
    links, sessions = await store.revoke_portal_session_id(org, body.session_id)
    return PortalRevoked(links=links, sessions=sessions)


@router.post("/organizations/{organization_id}/portal-links", status_code=201, response_model=PortalLinkOut,
             dependencies=[Depends(require_admin)], tags=["organizations (admin)"])
async def create_portal_link_as_admin(request: Request, body: PortalLinkIn, organization_id: str = OrganizationId,
                                      store: Store = Depends(store_of)) -> PortalLinkOut:
    return await _link(request, store, organization_id, body)
