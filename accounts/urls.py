from django.urls import path

from accounts.views import people

urlpatterns = [
    # The users and roles page (accounts/views/people.py).
    path("people/", people.listing, name="people_list"),
]
