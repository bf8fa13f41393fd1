"""Alert channel pages: list, configure, send a test, see what was sent."""

from django.contrib import messages
from django.db.models import Max, OuterRef, Subquery
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from catalog.alerts import notify
from catalog.alerts.forms import ChannelForm
from catalog.alerts.models import Channel, Notification
from catalog.alerts.transports import Webhook, transport_for
from catalog.decorators import operator_required, viewer_required
from catalog.views.common import HtmxHttpRequest, delete_config

EVENT_LABELS = dict(Channel.EVENT_CHOICES)


@viewer_required
def listing(request: HttpRequest) -> HttpResponse:
    # The latest message's outcome: a failed test (or alert) shows in the list,
    # not only on the channel's page.
    latest = Notification.objects.filter(channel=OuterRef("pk")).order_by("-created_at", "-id")
    channels = Channel.objects.annotate(
        last_sent_at=Max("notifications__created_at"),
        last_status=Subquery(latest.values("status")[:1]),
        last_event=Subquery(latest.values("event")[:1]),
        last_error=Subquery(latest.values("error")[:1]),
    ).order_by("name")  # an aggregate drops Meta.ordering
    rows = [(channel, transport_for(channel).target_display()) for channel in channels]
    return render(request, "catalog/channel_list.html", {"rows": rows, "event_count": len(EVENT_LABELS)})


@viewer_required
def detail(request: HttpRequest, pk: int) -> HttpResponse:
    return render_detail(request, get_object_or_404(Channel, pk=pk))


def render_detail(request: HttpRequest, channel: Channel, new_secret: str = "") -> HttpResponse:
    notifications = channel.notifications.select_related("alert")[:20]
    ctx = {
        "channel": channel,
        "target": transport_for(channel).target_display(),
        "event_labels": [label for value, label in Channel.EVENT_CHOICES if value in channel.events],
        "notifications": notifications,
        "new_secret": new_secret,
        "signature_header": Webhook.SIGNATURE_HEADER,
    }
    return render(request, "catalog/channel_detail.html", ctx)


@operator_required
def new(request: HttpRequest) -> HttpResponse:
    return edit_channel(request, Channel())


@operator_required
def edit(request: HttpRequest, pk: int) -> HttpResponse:
    return edit_channel(request, get_object_or_404(Channel, pk=pk))


def edit_channel(request: HttpRequest, channel: Channel) -> HttpResponse:
    # "Enable again" on the channel page lands here with the box ticked.
    initial = {"enabled": True} if request.GET.get("enable") else None
    form = ChannelForm(request.POST or None, instance=channel, initial=initial)
    if request.method == "POST" and form.is_valid():
        channel = form.save(commit=False)
        generated = notify.save_channel(
            request.user,
            channel,
            changed_fields=form.changed_fields(),
            secrets=form.secrets(),
            new_webhook_secret=form.cleaned_data.get("new_webhook_secret", False),
        )
        if generated:
            # Shown in this answer only: a redirect would have to keep the
            # secret in the session or a cookie until the next page.
            return render_detail(request, channel, new_secret=generated)
        messages.success(request, f"Saved {channel}.")
        return redirect(channel)
    return render(request, "catalog/channel_form.html", {"form": form, "object": channel})


@operator_required
def delete(request: HttpRequest, pk: int) -> HttpResponse:
    return delete_config(request, get_object_or_404(Channel, pk=pk), notify.delete_channel, "channel_list")


@operator_required
@require_POST
def send_test(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    channel = get_object_or_404(Channel, pk=pk)
    notification = notify.send_test(request.user, channel)
    if request.htmx:
        # The result, and the table of latest messages swapped out of band.
        ctx = {
            "notification": notification,
            "channel": channel,
            "notifications": channel.notifications.select_related("alert")[:20],
        }
        return render(request, "catalog/partials/channel_test_result.html", ctx)
    if notification.status == Notification.SENT:
        messages.success(request, f"Test message sent to {channel}.")
    else:
        messages.error(request, f"The test message was not sent: {notification.error}")
    return redirect(channel)
