from django.urls import path

from accounts.views import people, reset

urlpatterns = [
    # The users and roles page (accounts/views/people.py).
    path("people/", people.listing, name="people_list"),
    path("people/new/", people.new, name="person_new"),
    path("people/<int:pk>/", people.detail, name="person_detail"),
    path("people/<int:pk>/change/", people.change, name="person_change"),
    path("people/<int:pk>/deactivate/", people.deactivate, name="person_deactivate"),
    path("people/<int:pk>/reactivate/", people.reactivate, name="person_reactivate"),
    path("people/<int:pk>/password-reset/", people.password_reset, name="person_password_reset"),
    # A set-password link, opened before signing in: under /login/, which is public.
    path("login/reset/<uidb64>/<token>/", reset.SetPassword.as_view(), name="password_reset_confirm"),
]
