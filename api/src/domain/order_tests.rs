use std::str::FromStr;

use super::*;

fn req(items: &[(i64, i64)]) -> NewOrder {
    NewOrder {
        customer_id: Some(1),
        employee_id: 2,
        store_id: 3,
        payment_method: PaymentMethod::Card,
        items: items
            .iter()
            .map(|&(product_id, quantity)| NewOrderItem {
                product_id,
                quantity,
            })
            .collect(),
        session_id: None,
    }
}

fn refs() -> References {
    let price = |s: &str, is_available| ProductRow {
        price: Decimal::from_str(s).unwrap(),
        is_available,
    };
    References {
        customers: [1].into(),
        employees: [(2, true), (4, false)].into(),
        stores: [3].into(),
        products: [
            (10, price("3.80", true)),
            (11, price("2.50", true)),
            (12, price("9.00", false)),
        ]
        .into(),
    }
}

#[test]
fn draft_checks_item_count_and_quantities() {
    let now = Utc::now();
    assert_eq!(
        OrderDraft::new(req(&[]), now).unwrap_err(),
        OrderError::NoItems
    );
    let many: Vec<_> = (0..51).map(|i| (i, 1)).collect();
    assert_eq!(
        OrderDraft::new(req(&many), now).unwrap_err(),
        OrderError::TooManyItems(51)
    );
    let fifty: Vec<_> = (0..50).map(|i| (i, 1)).collect();
    assert_eq!(OrderDraft::new(req(&fifty), now).unwrap().lines.len(), 50);
    for bad in [0, -1, 101, i64::MAX] {
        assert_eq!(
            OrderDraft::new(req(&[(10, 1), (10, bad)]), now).unwrap_err(),
            OrderError::Quantity {
                index: 1,
                quantity: bad
            }
        );
    }
    let draft = OrderDraft::new(req(&[(10, 100)]), now).unwrap();
    assert_eq!(draft.lines[0].quantity, 100);
    assert_eq!(draft.id.get_version_num(), 7);
    assert_eq!(draft.ordered_at.timestamp_subsec_nanos() % 1000, 0);
}

#[test]
fn pricing_uses_product_rows_and_sums_lines() {
    let draft = OrderDraft::new(req(&[(10, 2), (11, 3)]), Utc::now()).unwrap();
    let (lines, total) = price_order(&draft, &refs()).unwrap();
    assert_eq!(total.to_string(), "15.10");
    assert_eq!(lines[0].unit_price.to_string(), "3.80");
    assert_eq!(lines[1].quantity, 3);
}

#[test]
fn pricing_refuses_unknown_and_inactive_references() {
    let r = refs();
    let check = |f: &dyn Fn(&mut OrderDraft)| {
        let mut d = OrderDraft::new(req(&[(10, 1)]), Utc::now()).unwrap();
        f(&mut d);
        price_order(&d, &r).unwrap_err()
    };
    assert_eq!(
        check(&|d| d.customer_id = Some(99)),
        OrderError::UnknownCustomer(99)
    );
    assert_eq!(
        check(&|d| d.employee_id = 99),
        OrderError::UnknownEmployee(99)
    );
    assert_eq!(
        check(&|d| d.employee_id = 4),
        OrderError::InactiveEmployee(4)
    );
    assert_eq!(check(&|d| d.store_id = 99), OrderError::UnknownStore(99));
    assert_eq!(
        check(&|d| d.lines[0].product_id = 99),
        OrderError::UnknownProduct(99)
    );
    assert_eq!(
        check(&|d| d.lines[0].product_id = 12),
        OrderError::UnavailableProduct(12)
    );
    let mut walk_in = OrderDraft::new(req(&[(10, 1)]), Utc::now()).unwrap();
    walk_in.customer_id = None;
    assert!(price_order(&walk_in, &r).is_ok());
}

#[test]
fn status_machine_allows_exactly_the_documented_transitions() {
    use OrderStatus::*;
    let allowed = [
        (Placed, Preparing),
        (Preparing, Ready),
        (Ready, Completed),
        (Placed, Cancelled),
        (Preparing, Cancelled),
    ];
    for from in OrderStatus::ALL {
        for to in OrderStatus::ALL {
            let ok = allowed.contains(&(from, to));
            assert_eq!(from.can_become(to), ok, "{from} -> {to}");
            assert_eq!(check_transition(from, to).is_ok(), ok);
        }
    }
    assert_eq!(
        check_transition(Ready, Cancelled).unwrap_err().to_string(),
        "cannot change order status from ready to cancelled"
    );
}

#[test]
fn statuses_and_methods_parse_their_names() {
    for s in OrderStatus::ALL {
        assert_eq!(OrderStatus::parse(s.as_str()).unwrap(), s);
    }
    assert_eq!(
        OrderStatus::parse("shipped").unwrap_err(),
        OrderError::UnknownStatus("shipped".into())
    );
    assert_eq!(PaymentMethod::parse("cash"), Some(PaymentMethod::Cash));
    assert_eq!(PaymentMethod::parse("bitcoin"), None);
}

#[test]
fn a_session_id_is_checked() {
    let mut r = req(&[(1, 1)]);
    r.session_id = Some("web-1".into());
    assert_eq!(
        OrderDraft::new(r.clone(), Utc::now())
            .unwrap()
            .session_id
            .as_deref(),
        Some("web-1")
    );
    r.session_id = Some("no spaces".into());
    assert_eq!(OrderDraft::new(r, Utc::now()), Err(OrderError::Session));
}
