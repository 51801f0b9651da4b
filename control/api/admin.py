"""Admin routes: organizations, and the first API key of each."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter, Depends, Path

from control.api.auth import require_admin, store_of
from control.api.schemas import KeyCreated, KeyIn, OrganizationCreated, OrganizationIn, OrganizationOut
from publisher.store import Store

OrganizationId = Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,199}$")

router = APIRouter(prefix="/v1/organizations", tags=["organizations (admin)"], dependencies=[Depends(require_admin)])


@router.post("", status_code=201, response_model=OrganizationCreated)
async def create_organization(body: OrganizationIn, store: Store = Depends(store_of)) -> OrganizationCreated:
    secret = await store.add_organization(body.id)
    created = await store.organization(body.id)
    return OrganizationCreated(id=created.id, created_at=created.created_at, secret=secret)


@router.get("", response_model=list[OrganizationOut])
async def list_organizations(store: Store = Depends(store_of)) -> list[OrganizationOut]:
    return [OrganizationOut(id=org.id, created_at=org.created_at) for org in await store.organizations()]


@router.get("/{organization_id}", response_model=OrganizationOut)
async def get_organization(organization_id: str = OrganizationId, store: Store = Depends(store_of)) -> OrganizationOut:
    org = await store.organization(organization_id)
    return OrganizationOut(id=org.id, created_at=org.created_at)


@router.delete("/{organization_id}", status_code=204)
async def delete_organization(organization_id: str = OrganizationId, store: Store = Depends(store_of)) -> None:
    await store.delete_organization(organization_id)


@router.post("/{organization_id}/keys", status_code=201, response_model=KeyCreated)
async def create_first_key(body: KeyIn, organization_id: str = OrganizationId,
                           store: Store = Depends(store_of)) -> KeyCreated:
    row, key = await store.add_api_key(organization_id, body.name)
    return KeyCreated(**asdict(row), key=key)
