"""Request and response bodies of the users API."""

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, EmailStr, Field, StringConstraints

from common.types import Integer, Text, TextFirst
from users.models import User

Email = Annotated[EmailStr, TextFirst]
Name = Annotated[Text, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: Email = Field(max_length=320)
    password: Text = Field(min_length=8, max_length=128)
    name: Name
    credit_limit_cents: Integer = Field(ge=0, le=100_000_000)


class UserOut(BaseModel):
    id: uuid.UUID
    email: str
    name: str
    status: str
    credit_limit_cents: int
    credit_available_cents: int
    created_at: datetime

    @classmethod
    def of(cls, user: User, credit_available_cents: int) -> "UserOut":
        return cls(
            id=user.id,
            email=user.email,
            name=user.name,
            status=user.status,
            credit_limit_cents=user.credit_limit_cents,
            credit_available_cents=credit_available_cents,
            created_at=user.created_at,
        )


class SessionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: Email = Field(max_length=320)
    password: Text = Field(min_length=1, max_length=128)


class PasswordChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    current_password: Text = Field(min_length=1, max_length=128)
    new_password: Text = Field(min_length=8, max_length=128)


class SessionOut(BaseModel):
    token: str
    user_id: uuid.UUID
    expires_at: datetime
