"""A FastAPI signup endpoint on async SQLAlchemy: the signup and its site's provisioning job are
written in one transaction (``uvicorn app:app``; the status table must exist in the same
database: ``PROVISIONER_DATABASE_URL=... provision db upgrade``)."""

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel
from sqlalchemy import String
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from producers.api import Provisioner
from worker.errors import InvalidRequestError

DATABASE_URL = os.environ.get(
    "DATABASE_URL", "postgresql+psycopg_async://postgres@127.0.0.1:5432/signups"
)
engine = create_async_engine(DATABASE_URL)
Session = async_sessionmaker(engine, expire_on_commit=False)
provisioner = Provisioner.from_url(DATABASE_URL)  # the status table is in the same database


class Base(DeclarativeBase):
    pass


class Signup(Base):
    __tablename__ = "signups"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(255))
    domain: Mapped[str] = mapped_column(String(255))


class SignupIn(BaseModel):
    email: str
    domain: str


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    async with engine.begin() as connection:
        await connection.run_sync(Base.metadata.create_all)
    yield
    await engine.dispose()


app = FastAPI(lifespan=lifespan)


@app.post("/signups", status_code=201)
async def signup(body: SignupIn) -> dict[str, Any]:
    async with Session() as session, session.begin():  # commits at the end, or rolls back
        signup = Signup(email=body.email, domain=body.domain)
        session.add(signup)
        await session.flush()  # the signup's id
        try:
            job_id = await provisioner.aenqueue(
                session, {"id": f"signup-{signup.id}", "domain": signup.domain}
            )
        except InvalidRequestError as exc:  # rolled back: no signup without its site
            raise HTTPException(422, {"error": str(exc), "field": exc.field}) from exc
    return {"signup": signup.id, "job": job_id}
