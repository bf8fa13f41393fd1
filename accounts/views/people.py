"""The users and roles page: administrators add people, give them a role,
deactivate them and send password resets; auditors see the list."""

from django.contrib.auth.models import User
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from catalog.decorators import viewer_required


@viewer_required
def listing(request: HttpRequest) -> HttpResponse:
    people = User.objects.order_by("username")
    return render(request, "accounts/people_list.html", {"people": people})
