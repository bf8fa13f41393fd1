from django.urls import path

from accounts.views import people, reset, sign_in, single_sign_on, two_factor

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
    # Single sign-on (accounts/oidc.py), under /login/ too; the names are mozilla-django-oidc's.
    path("login/sso/start/", single_sign_on.StartSignIn.as_view(), name="oidc_authentication_init"),
    path("login/sso/callback/", single_sign_on.finish_sign_in, name="oidc_authentication_callback"),
    # Two-factor (accounts/two_factor.py): the sign-in's second step, under /login/ as it comes before signing in;
    # each person's own set-up under /account/, which auditors may post to (catalog.middleware.ReadOnlyForViewers);
    # the policy and another person's reset for administrators, on the people page.
    path("login/second-factor/", sign_in.second_factor, name="login_second_factor"),
    path("login/second-factor/key-options/", sign_in.second_factor_key_options, name="login_second_factor_key_options"),
    path("account/two-factor/", two_factor.overview, name="two_factor"),
    path("account/two-factor/recovery-codes/", two_factor.new_recovery_codes, name="two_factor_recovery_codes"),
    path("account/two-factor/disable/", two_factor.disable, name="two_factor_disable"),
    # Security keys and passkeys (accounts/security_keys.py): the JSON options of a WebAuthn ceremony, then the form.
    path("account/two-factor/keys/options/", two_factor.key_options, name="two_factor_key_options"),
    path("account/two-factor/keys/add/", two_factor.add_key, name="two_factor_key_add"),
    path("account/two-factor/keys/<int:pk>/remove/", two_factor.remove_key, name="two_factor_key_remove"),
    path("account/two-factor/confirm-options/", two_factor.confirm_options, name="two_factor_confirm_options"),
    path("people/two-factor-policy/", two_factor.policy, name="two_factor_policy"),
    path("people/<int:pk>/two-factor/reset/", two_factor.reset, name="two_factor_reset"),
]
