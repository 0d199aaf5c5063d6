"""FastAPI dependencies: the shared state and a DB session per request, as `Annotated` aliases for routes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from service.state import ServiceState


def get_state(request: Request) -> ServiceState:
    """The ServiceState the app was created with."""
    return request.app.state.c2l


def get_session(request: Request) -> Iterator[Session]:
    """A session committed by the handler itself; closed after the response."""
    with request.app.state.c2l.sessions() as session:
        yield session


StateDep = Annotated[ServiceState, Depends(get_state)]
SessionDep = Annotated[Session, Depends(get_session)]
