from __future__ import annotations

from http import HTTPStatus

import pytest
from rest_framework.test import APIClient

from accounts.models import Organization
from quotas.billing.models import BillingAccount, Purchase
from quotas.services.trials import trial_start
from tests import factories
from tests.billing.helpers import open_postpaid
from tests.conftest import verify_email


def _login(client, user) -> None:
    # The factories set a password without saving it; the session hash must match the row.
    user.save(update_fields=["password"])
    client.force_login(user)


def _page(org) -> str:
    return f"/billing/{org.uuid}/"


def _api(org) -> str:
    return f"/api/v1/billing/organizations/{org.uuid}/"


@pytest.fixture
def api_carol(carol) -> APIClient:
    client = APIClient()
    client.force_authenticate(carol)
    return client


def test_the_owner_sees_packs_plan_invoices_and_payments(
    client, alice, tenant, cluster, pack, stripe_on, send_webhook
):
    plan = open_postpaid(tenant.org, tenant.project, limit="1000")
    customer = BillingAccount.objects.get(organization=plan.organization).stripe_customer_id
    invoice = stripe_on.create_invoice(customer, amount_due=12345)
    send_webhook(
        stripe_on.event("invoice.finalized", stripe_on.update_invoice(invoice["id"], status="open"))
    )
    _login(client, alice)

    response = client.get(_page(tenant.org))

    assert response.status_code == HTTPStatus.OK
    html = response.content.decode()
    assert "Starter" in html
    assert f'action="/billing/{tenant.org.uuid}/checkout/"' in html
    assert "1,000.00 SU" in html  # the credit limit
    assert "GPUC-0001" in html
    assert "123.45 EUR" in html
    assert invoice["hosted_invoice_url"] in html
    assert "Billing is off" not in html


def test_the_billing_member_sees_the_page_and_the_api(client, carol, api_carol, tenant, stripe_on):
    _login(client, carol)

    assert client.get(_page(tenant.org)).status_code == HTTPStatus.OK
    response = api_carol.get(_api(tenant.org))
    assert response.status_code == HTTPStatus.OK
    assert response.json()["organization"] == str(tenant.org.uuid)
    assert api_carol.get(f"{_api(tenant.org)}invoices/").status_code == HTTPStatus.OK


@pytest.mark.parametrize("who", ["bob", "mallory"])
def test_members_without_a_billing_role_and_outsiders_get_404_everywhere(
    client, tenant, mallory_tenant, who, request, stripe_on
):
    user = request.getfixturevalue(who)
    api = APIClient()
    api.force_authenticate(user)
    _login(client, user)

    assert client.get(_page(tenant.org)).status_code == HTTPStatus.NOT_FOUND
    assert client.post(f"{_page(tenant.org)}checkout/").status_code == HTTPStatus.NOT_FOUND
    assert api.get(_api(tenant.org)).status_code == HTTPStatus.NOT_FOUND
    assert api.get(f"{_api(tenant.org)}invoices/").status_code == HTTPStatus.NOT_FOUND
    listed = [o["organization"] for o in api.get("/api/v1/billing/organizations/").json()]
    assert str(tenant.org.uuid) not in listed


def test_bob_who_manages_no_billing_is_told_whom_to_ask_instead_of_a_404(client, bob, tenant):
    _login(client, bob)

    response = client.get("/billing/")

    assert response.status_code == HTTPStatus.OK
    page = response.content.decode()
    assert "Ask an owner of Vision Lab to give you the billing role" in page
    assert 'href="/organizations/new/"' in page
    assert client.get(_page(tenant.org)).status_code == HTTPStatus.NOT_FOUND


def test_with_debug_on_billing_for_a_user_with_nothing_is_no_debug_404(client, settings, db):
    settings.DEBUG = True
    newcomer = factories.UserFactory(username="newcomer", email="newcomer@example.org")
    _login(client, newcomer)

    response = client.get("/billing/")

    assert response.status_code == HTTPStatus.OK
    assert "Create an organization" in response.content.decode()


def test_billing_home_leads_the_owner_to_her_organization(client, alice, tenant):
    _login(client, alice)

    response = client.get("/billing/")

    assert response.status_code == HTTPStatus.FOUND
    assert response["Location"] == _page(tenant.org)


def test_the_nav_shows_billing_to_owners_and_billing_members_only(client, alice, bob, tenant):
    _login(client, alice)
    assert 'href="/billing/"' in client.get("/").content.decode()

    _login(client, bob)
    assert 'href="/billing/"' not in client.get("/").content.decode()


def test_the_buy_button_sends_the_browser_to_stripe_checkout(
    client, alice, tenant, cluster, pack, stripe_on
):
    _login(client, alice)

    response = client.post(
        f"{_page(tenant.org)}checkout/",
        {"pack": "starter", "quantity": "2", "project": str(tenant.project.uuid)},
    )

    purchase = Purchase.objects.get()
    assert response.status_code == HTTPStatus.FOUND
    assert response["Location"] == purchase.checkout_url
    assert purchase.quantity == 2


def test_a_bad_buy_form_comes_back_with_the_reason(client, alice, tenant, cluster, pack, stripe_on):
    _login(client, alice)

    response = client.post(
        f"{_page(tenant.org)}checkout/",
        {"pack": "starter", "quantity": "0", "project": str(tenant.project.uuid)},
        follow=True,
    )

    assert response.status_code == HTTPStatus.OK
    assert "quantity must be a whole number of at least 1" in response.content.decode()
    assert stripe_on.requests == []


def test_without_keys_the_page_says_billing_is_off_and_nothing_breaks(
    client, alice, tenant, pack, stripe_off, api_alice
):
    _login(client, alice)

    response = client.get(_page(tenant.org))

    assert response.status_code == HTTPStatus.OK
    assert "Billing is off" in response.content.decode()
    assert api_alice.get(_api(tenant.org)).json()["billing_enabled"] is False
    assert (
        client.post(
            "/billing/stripe/webhook/", data="{}", content_type="application/json"
        ).status_code
        == HTTPStatus.BAD_REQUEST
    )


def test_the_pack_list_is_public_to_signed_in_users(api_bob, pack):
    response = api_bob.get("/api/v1/billing/packs/")

    assert response.status_code == HTTPStatus.OK
    assert [(p["slug"], p["su_amount"]) for p in response.json()] == [("starter", "500.0000")]


def test_the_billing_page_of_a_company_offers_its_owner_the_trial_until_it_is_used(
    client, alice, tenant, settings
):
    settings.GPUC_TRIAL_SU = 10
    Organization.objects.filter(pk=tenant.org.pk).update(kind=Organization.Kind.COMPANY)
    tenant.org.refresh_from_db()
    verify_email(alice)
    factories.ClusterFactory(name="sim", kind="simulated")
    _login(client, alice)

    offered = client.get(_page(tenant.org)).content.decode()
    trial_start(actor=alice, organization=tenant.org)
    after = client.get(_page(tenant.org)).content.decode()

    assert f'href="/organizations/{tenant.org.uuid}/trial/"' in offered
    assert "/trial/" not in after
